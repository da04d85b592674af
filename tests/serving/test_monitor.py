"""Watching what is served (issue #44): the monitor asset reads the real gateway's records of a
deployment, its drift check passes for prompts like the adapter's training prompts and fails
for another domain's (over several seeds), and its alert reaches a local webhook receiver once
when the check starts failing and once when it recovers. The gateway runs for real (uvicorn,
SQLite) in front of the fake engine; the embedding model is the platform's own (MiniLM)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml

from assets.monitors import drift_of
from config.loading import load_config
from config.monitoring import DriftSpec
from ingest.demo_data import math_problems
from pipelines.graph import make_definitions
from pipelines.scaffold import ticket_rows
from resources.embeddings import llama_index_embedding
from tests.automation.test_sensors import observe, requested
from tests.support.capture import ADMIN_ENV, ADMIN_TOKEN, Running, Tenant, running_gateway
from tests.support.projects import run_assets
from tests.support.webhooks import Receiver

DRIFT = {"p_value": 0.01, "min_prompts": 20, "sample": 40, "resamples": 199, "shown": 3}


def tickets(count: int, seed: int) -> list[str]:
    return [row["messages"][-2]["content"] for row in ticket_rows(count, seed)]


def math(count: int, seed: int) -> list[str]:
    return [row["messages"][1]["content"]  # type: ignore[index]
            for row in math_problems.generate(count, seed)]


@pytest.fixture(scope="module")
def kept(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    with pytest.MonkeyPatch.context() as env:
        env.setenv(ADMIN_ENV, ADMIN_TOKEN)
        yield from running_gateway("sqlite", tmp_path_factory.mktemp("monitor-asset"))


@pytest.fixture(scope="module")
def embed() -> Any:
    """The platform's embedding model, each text embedded once."""
    model = llama_index_embedding("bundled:all-MiniLM-L6-v2")
    seen: dict[str, list[float]] = {}

    def vectors(texts: list[str]) -> list[list[float]]:
        fresh = [t for t in dict.fromkeys(texts) if t not in seen]
        seen.update(zip(fresh, model.get_text_embedding_batch(fresh), strict=True))
        return [seen[t] for t in texts]
    return vectors


def test_another_domain_drifts_and_the_same_one_does_not_over_seeds(embed: Any) -> None:
    reference = tickets(200, seed=1)
    for seed in range(3):
        spec = DriftSpec(**{**DRIFT, "seed": seed})
        same = drift_of(tickets(60, seed=100 + seed), reference, spec, embed)
        other = drift_of(math(60, seed=seed), reference, spec, embed)
        assert same.p_value >= spec.p_value, (seed, same)
        assert other.p_value < spec.p_value and other.statistic > same.statistic, (seed, other)
        assert (other.recent, other.reference) == (40, 40)


def project(root: Path, kept: Running, receiver: str, **monitor: object) -> dg.Definitions:
    (root / "tickets.jsonl").write_text("".join(json.dumps(r) + "\n"
                                                for r in ticket_rows(200, seed=1)))
    (root / "factory.yaml").write_text(yaml.safe_dump({
        "storage": {"object_store": "file://store", "work_dir": "work"},
        "gateway": {"url": kept.url, "admin_token_env": ADMIN_ENV},
        "alerts": {"webhooks": [{"url": f"{receiver}/slack", "format": "slack"},
                                {"url": f"{receiver}/json", "retries": 0}]},
        "base_models": {"tiny": {"source": "local"}},
        "datasets": {"tickets": {"sources": [{"path": "tickets.jsonl"}],
                                 "dedupe": {"near": False}}},
        "adapters": {"adapter-a": {"base_model": "tiny", "dataset": "tickets"}},
        "evaluations": {"adapter-a-eval": {"adapter": "adapter-a"}},
        "deployments": {"support": {"base_model": "tiny", "adapters": ["adapter-a"],
                                    "evaluate": {},
                                    "monitor": {"window_s": 300, "drift": DRIFT, **monitor}}}}))
    return make_definitions(load_config(root / "factory.yaml"))


def ask_all(kept: Running, tenant: Tenant, prompts: list[str]) -> None:
    for prompt in prompts:
        kept.ask(tenant, prompt)


def checks(result: dg.ExecuteInProcessResult) -> dict[str, bool]:
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


@pytest.mark.slow  # runs the monitor asset four times
def test_the_monitor_alerts_once_on_drift_and_once_on_recovery(
        kept: Running, tmp_path: Path, receiver: str) -> None:
    tenant = kept.project("all")
    defs = project(tmp_path, kept, receiver)
    assert run_assets(defs, "dataset/tickets").success
    ask_all(kept, tenant, tickets(40, seed=7))

    calm = run_assets(defs, "monitor/support")
    assert checks(calm) == {"error_rate": True, "latency_p99": True, "feedback_score": True,
                            "drift": True}
    meta = calm.asset_materializations_for_node("monitor__support")[0].metadata
    assert meta["requests"].value == 40 and meta["errors"].value == 0
    assert Receiver.received == []

    ask_all(kept, tenant, math(60, seed=3))  # the newest 200 kept prompts: mostly arithmetic
    drifted = run_assets(defs, "monitor/support")
    assert checks(drifted)["drift"] is False
    again = run_assets(defs, "monitor/support")  # still failing: no second alert
    assert checks(again)["drift"] is False
    firing = [r for r in Receiver.received]
    assert [r["path"] for r in firing] == ["/slack", "/json"]
    assert firing[0]["body"]["text"].startswith("[FIRING] support: drift: adapter-a: p ")
    assert firing[1]["body"]["state"] == "firing" and firing[1]["body"]["check"] == "drift"

    ask_all(kept, tenant, tickets(200, seed=8))  # the newest 200 are tickets again
    recovered = run_assets(defs, "monitor/support")
    assert checks(recovered)["drift"] is True
    assert [(r["path"], r["body"].get("state")) for r in Receiver.received[2:]] == [
        ("/slack", None), ("/json", "resolved")]
    assert Receiver.received[2]["body"]["text"].startswith("[RESOLVED] support: drift:")


@pytest.mark.slow  # Dagster runs and automation ticks
@pytest.mark.parametrize(("on_failure", "follows"), [
    ("reevaluate", {"served_evaluation/support"}),
    ("retrain", {"dataset/tickets", "adapter/adapter-a", "evaluation/adapter-a-eval",
                 "promotion/adapter-a", "deployment/support", "served_evaluation/support"})])
def test_a_failed_check_sets_the_declared_rerun_in_motion_once(
        kept: Running, tmp_path: Path, receiver: str, on_failure: str, follows: set[str]) -> None:
    tenant = kept.project("all")
    defs = project(tmp_path, kept, receiver, on_failure=on_failure)
    sensor = defs.resolve_sensor_def("monitor_trigger_support")
    with dg.DagsterInstance.ephemeral() as instance:
        for key in ("base_model/tiny", "deployment/support"):
            instance.report_runless_asset_event(dg.AssetMaterialization(key))
        assert run_assets(defs, "dataset/tickets", instance=instance).success
        _, automation = requested(defs, instance)
        ask_all(kept, tenant, math(200, seed=11))  # the newest 200: nothing like training
        assert checks(run_assets(defs, "monitor/support", instance=instance))["drift"] is False

        def tick(cursor: str | None) -> tuple[dg.SensorResult, str | None]:
            context = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs)
            result = sensor.evaluate_tick(context)
            return result, result.cursor

        fired, cursor = tick(None)
        (observation,) = fired.asset_events
        assert observation.asset_key == dg.AssetKey(["trigger", "deployment", "support"])
        assert observation.metadata["failed"].value == ["drift"]
        observe(instance, fired)
        keys, automation = requested(defs, instance, automation)
        assert keys == follows
        quiet, cursor = tick(cursor)  # the same failed evaluation sets nothing in motion again
        assert not quiet.asset_events
        # nor does the next tick of the same incident: one rerun per incident, like the alert
        assert checks(run_assets(defs, "monitor/support", instance=instance))["drift"] is False
        still, _ = tick(cursor)
        assert not still.asset_events
        # a cursor of before the once-per-incident rule (ids only) sees the failing check as
        # already failing: the upgrade sets nothing in motion again
        drift = dg.AssetCheckKey(dg.AssetKey(["monitor", "support"]), "drift")
        record = instance.event_log_storage.get_latest_asset_check_execution_by_key([drift])
        upgraded, _ = tick(json.dumps({"drift": record[drift].id}))
        assert not upgraded.asset_events
