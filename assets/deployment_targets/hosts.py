"""`target: hosts`: vLLM servers already running elsewhere (started with the object store's LoRA
resolver, e.g. from `factory render-deployment`'s scripts), health-checked and brought to the
promoted versions; nothing is started or stopped here."""

from typing import Any

import dagster as dg
import httpx

from assets.deployment_targets.rollout import Rollout
from config.deployments import DeploymentSpec
from resources import vllm_replica
from resources.vllm_replica import AdapterToServe
from resources.vllm_server import VLLMServer


def refresh_host(url: str, base_model: str, adapters: list[AdapterToServe],
                 headers: dict[str, str], log: Any) -> dict[str, Any]:
    """One running server health-checked, then brought to the promoted versions."""
    try:
        health = httpx.get(f"{url}/health", headers=headers, timeout=10).status_code
    except httpx.HTTPError as exc:
        raise dg.Failure(f"replica {url} is unreachable ({exc}); start it (the rendered "
                         "docker-run.sh or EC2 user data) or remove it from hosts") from exc
    if health != 200:
        raise dg.Failure(f"replica {url} answers /health with {health}; not refreshed")
    served = {n: v for n, v in vllm_replica.versions(url, headers).items() if v is not None}
    actions = vllm_replica.sync(url, served, adapters, log, headers)
    return {"url": url, "action": "hot-updated: " + ", ".join(actions) if actions
            else "unchanged", "models": vllm_replica.verify(url, base_model, adapters, headers)}


class HostsTarget:
    name = "hosts"

    def where(self, spec: DeploymentSpec) -> str:
        return f"the servers in hosts ({len(spec.hosts)})"

    def roll_out(self, rollout: Rollout) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        return [refresh_host(url.rstrip("/"), rollout.spec.base_model, rollout.adapters,
                             rollout.headers, rollout.context.log)
                for url in rollout.spec.hosts], {}

    def stop(self, name: str, spec: DeploymentSpec | None, vllm: VLLMServer) -> list[str]:
        return [f"{name}: the servers in hosts keep running (they are not started here)"]
