"""What every deployment target is given and must do: bring its replicas to the promoted
versions (a rollout) and stop what it started."""

from dataclasses import dataclass
from typing import Any, Protocol

import dagster as dg

from assets.common import current
from config.deployments import DeploymentSpec
from config.schema import FactoryConfig
from resources.object_store import ObjectStore
from resources.vllm_replica import AdapterToServe
from resources.vllm_server import VLLMServer
from store.registry import Registry


def what_to_serve(store: ObjectStore, config: FactoryConfig, spec: DeploymentSpec
                  ) -> tuple[list[tuple[str, dict, int]], list[str]]:
    """(name, artifact ref, LoRA rank) of every promoted adapter or mixture, and the names that
    have no promoted version (or, for a mixture, a member without one). Checked here, not only
    by the blocking gate (which binds within one run): only a version the registry marks
    promoted is ever served."""
    registry = Registry(store)
    servable, not_promoted = [], []
    for adapter_name in spec.adapters:
        ref = (current(store, "mixture", adapter_name) if adapter_name in config.mixtures
               else registry.champion(adapter_name))
        if ref is not None and any(registry.champion(a) is None  # a member was unpublished
                                   for a in ref.get("components", {})):
            ref = None
        if ref is None:
            not_promoted.append(adapter_name)
            continue
        rank = store.get_json(f"{ref['prefix']}/adapter_config.json")["r"]
        servable.append((adapter_name, ref, rank))
    return servable, not_promoted


@dataclass(frozen=True)
class Rollout:
    """One materialization of deployment `name`: the base model's ref and the promoted adapters
    every replica must serve, and the headers a private replica wants."""

    context: dg.AssetExecutionContext
    store: ObjectStore
    vllm: VLLMServer
    config: FactoryConfig
    name: str
    spec: DeploymentSpec
    base: dict[str, Any]
    adapters: list[AdapterToServe]

    @property
    def headers(self) -> dict[str, str]:
        key = self.config.gateway.upstream_api_key
        return {"authorization": f"Bearer {key}"} if key else {}


class Target(Protocol):
    name: str

    def where(self, spec: DeploymentSpec) -> str:
        """Where the replicas run, for the asset's description."""
        ...

    def roll_out(self, rollout: Rollout) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Each replica as the gateway reaches it (url, models, action) and the target's own
        metadata for the materialization."""
        ...

    def stop(self, name: str, spec: DeploymentSpec | None, vllm: VLLMServer) -> list[str]:
        """Stop the deployment's servers where this target can; one line per thing done."""
        ...
