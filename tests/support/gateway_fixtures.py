"""A real gateway (uvicorn on 127.0.0.1) in front of the small project's real vLLM server."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dagster as dg
import httpx

from config.schema import FactoryConfig
from gateway.serving import Gateway
from pipelines.graph import make_definitions, resources_for
from tests.support.live_server import serve

__all__ = ["serve"]

ADMIN_TOKEN = "test-admin-token"


def ensure_deployment(config: FactoryConfig) -> str:
    """The deployment's URL, (re)starting it if an earlier test stopped it."""
    vllm = resources_for(config)["vllm"]
    state = vllm.state("local")
    if state is None or not vllm.healthy(state):
        with dg.DagsterInstance.get() as instance:
            result = make_definitions(config).resolve_job_def("everything").execute_in_process(
                instance=instance, asset_selection=[dg.AssetKey(["deployment", "local"])])
        assert result.success
        state = vllm.state("local")
    assert state is not None
    return state.url


@dataclass
class RunningGateway:
    url: str
    gateway: Gateway
    project: str
    key: str
    other_project: str
    other_key: str

    def client(self, key: str | None = None) -> httpx.Client:
        headers = {"authorization": f"Bearer {key or self.key}"} if key != "" else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=120)


def tenants(gateway: Gateway, models: list[str]) -> tuple[str, str, str, str]:
    """Two projects: ours (granted `models` + embeddings) and another granted nothing of ours."""
    suffix = uuid.uuid4().hex[:8]
    ours, theirs = f"team-{suffix}", f"other-{suffix}"
    t = gateway.tenancy
    t.create_project(ours, owner="alice")
    t.create_project(theirs, owner="mallory")
    for model in [*models, gateway.settings.embedding_model_name]:
        t.grant(ours, model)
    key = t.create_key(ours, "alice")["key"]
    other_key = t.create_key(theirs, "mallory")["key"]
    return ours, key, theirs, other_key


def fuzz_without_server_errors(url: str, operations: list, headers: Callable[[str], dict],
                               examples: int = 15) -> dict[int, int]:
    """Schemathesis cases of every operation against a running gateway: never a 5xx, every
    error in the API's format. `headers(path)` says who calls; returns the statuses seen."""
    from hypothesis import HealthCheck, given, settings

    seen: dict[int, int] = {}

    def check(case: Any) -> None:
        response = case.call(base_url=url, timeout=30, headers=headers(case.path))
        seen[response.status_code] = seen.get(response.status_code, 0) + 1
        assert response.status_code < 500, (case.method, case.path, case.body, response.text)
        if response.status_code >= 400:
            assert set(response.json()["error"]) >= {"message", "type", "code"}

    for operation in operations:
        settings(max_examples=examples, deadline=None, database=None,
                 suppress_health_check=list(HealthCheck))(
            given(case=operation.as_strategy())(check))()
    assert sum(seen.values()) >= len(operations)
    return seen
