"""The asset graph built from a config: every asset generated from factory.yaml, resources, jobs.

Wiring only; what each asset does lives in `assets/`, how it reaches engines in `resources/`.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from assets.adapters import adapter_asset
from assets.base_models import base_model_asset
from assets.common import Definition
from assets.corpora import corpus_asset
from assets.datasets import dataset_asset
from assets.deployments import deployment_asset
from assets.evaluations import evaluation_asset
from assets.indexes import index_asset
from assets.mixtures import mixture_asset
from assets.monitors import monitor_asset, monitor_key, monitored
from assets.served_evaluations import served_evaluation_asset
from assets.speech_evaluation import transcription_eval_asset
from assets.sweeps import sweep_assets
from assets.usage import USAGE, usage_asset
from config.adapters import AdapterSpec
from config.schema import FactoryConfig
from resources.compute import WorkerCompute
from resources.object_store import ObjectStore
from resources.remote_compute import RemoteCompute
from resources.retrieval import chroma_server
from resources.vector_store import ChromaResource
from resources.vllm_server import VLLMServer
from sensors.automation import automation_for, conditions_for

REPO_ROOT = Path(__file__).resolve().parents[1]


def resources_for(config: FactoryConfig) -> dict[str, dg.ConfigurableResource]:
    work = config.work_dir
    venvs = REPO_ROOT / ".venvs"
    worker = WorkerCompute(python=str(venvs / "train" / "bin" / "python"),
                           project_root=str(REPO_ROOT), target=config.compute.device,
                           kernel_env=config.compute.kernel_env)
    return {
        "store": ObjectStore(url=config.storage.object_store, root=str(config.root),
                             cache_dir=str(work / "cache"),
                             endpoint_url=config.storage.s3_endpoint_url),
        "worker": worker,
        "training": training_compute(config, worker),
        "vllm": VLLMServer(python=str(venvs / "serve" / "bin" / "python"),
                           project_root=str(REPO_ROOT), state_dir=str(work / "deployments")),
        "chroma": chroma_resource(config),
    }


def training_compute(config: FactoryConfig, local: WorkerCompute) -> WorkerCompute:
    """Where `worker.train` runs; validation, evaluation and merges stay on the local worker."""
    compute = config.compute
    if compute.machine is None:
        return local
    return RemoteCompute(kind=compute.kind, settings=compute.machine.model_dump_json(),
                         python=local.python, project_root=local.project_root,
                         target=compute.device, kernel_env=local.kernel_env,
                         max_runtime_s=compute.max_runtime_s)


def chroma_resource(config: FactoryConfig) -> ChromaResource:
    url = config.storage.chroma_url
    if url:
        host, port = chroma_server(url)
        return ChromaResource(host=host, port=port)
    return ChromaResource(path=str(config.work_dir / "chroma"))


def assets_for(config: FactoryConfig) -> list[Definition]:
    factories = [
        (config.base_models, base_model_asset), (config.datasets, dataset_asset),
        (config.adapters, adapter_or_sweep), (config.evaluations, evaluation_asset),
        (config.mixtures, mixture_asset),
        (config.deployments, deployment_asset), (config.deployments, served_evaluation_asset),
        (config.deployments, transcription_eval_asset), (config.deployments, monitor_asset),
        (config.corpora, corpus_asset),
        (config.corpora, index_asset),
    ]
    return [d for table, factory in factories for name, spec in table.items()
            for d in factory(name, spec, config)] + usage_asset(config)  # type: ignore[operator]


def adapter_or_sweep(name: str, spec: AdapterSpec, config: FactoryConfig) -> list[Definition]:
    return (sweep_assets if spec.sweep else adapter_asset)(name, spec, config)


def make_definitions(config: FactoryConfig) -> dg.Definitions:
    defs = assets_for(config)
    # AssetChecksDefinition subclasses AssetsDefinition: test for checks first.
    checks = [d for d in defs if isinstance(d, dg.AssetChecksDefinition)]
    assets = [d for d in defs if not isinstance(d, dg.AssetChecksDefinition)]
    watched, sensors = automation_for(config)
    conditions = conditions_for(config, [spec for a in assets for spec in a.specs])
    automated = dg.map_asset_specs(lambda spec: spec.replace_attributes(
        automation_condition=conditions.get(spec.key)), assets)
    limit = {"dagster/max_runtime": str(config.compute.max_runtime_s)}
    return dg.Definitions(
        assets=[*automated, *watched],
        asset_checks=checks,
        jobs=[
            dg.define_asset_job(
                "everything", selection=dg.AssetSelection.all() - dg.AssetSelection.assets(
                    USAGE, *(monitor_key(d) for d in monitored(config))),
                tags=limit, description="Materialize the whole graph end to end (but "
                                        "gateway/usage and the monitors, which a running "
                                        "gateway answers)."),
            dg.define_asset_job("rag", selection=dg.AssetSelection.groups("rag")),
        ],
        sensors=sensors,
        resources=resources_for(config),
    )
