"""What the user declares in `factory.yaml`: the typed schema (schema.py, with the gateway's
section in gateway.py) and its loader (loading.py). Dagster-free and the ground floor: assets,
resources, sensors, the gateway and the wiring in pipelines/ all read the project through it.
"""
