"""What the user declares in `factory.yaml`: one module per section (storage, base_models,
datasets, adapters with training, evaluations, mixtures, deployments, corpora, compute_spec,
gateway), each with the rules that check it against the others, the whole file in schema.py
(`FactoryConfig`) and its loader (loading.py). Dagster-free: assets, resources, sensors, the
gateway and the wiring in pipelines/ all read the project through it.
"""
