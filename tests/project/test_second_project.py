"""A second project unlike the demo, end to end on a real model (SmolLM2-135M-Instruct, from the
GGUF its package carries): `factory init`'s support tickets (chats with a system turn, some
multi-turn) plus the same tickets as an alpaca CSV, preference pairs for a DPO
adapter, and a corpus of real documents found on every Debian machine (package copyright files),
materialized with `factory materialize`. The adapter must beat the base on its own primary
metric through the gate, the endpoint must score what the offline evaluation scored, and
retrieval must find the right document. Then the deployment is watched through the gateway
(issue #44): asked its own kind of prompts, then arithmetic, its monitor counts what was sent,
its drift check passes and then fails, one alert reaches a local receiver, and the declared
trigger sets the served evaluation in motion."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest
import yaml
from click.testing import CliRunner

from config.loading import load_config
from config.schema import FactoryConfig
from erasure.ledger import Ledger
from ingest.demo_data import math_problems
from pipelines import playground
from pipelines.cli import main
from pipelines.graph import make_definitions, resources_for
from tests.automation.test_sensors import observe, requested
from tests.support.live_server import free_port
from tests.support.projects import second_project
from tests.support.webhooks import Receiver


def latest(asset: str) -> dict[str, object]:
    with dg.DagsterInstance.get() as instance:
        event = instance.get_latest_materialization_event(dg.AssetKey(asset.split("/")))
    assert event is not None and event.asset_materialization is not None, asset
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def latest_check(asset: str, check: str) -> dict[str, object]:
    key = dg.AssetCheckKey(dg.AssetKey(asset.split("/")), check)
    with dg.DagsterInstance.get() as instance:
        record = instance.event_log_storage.get_latest_asset_check_execution_by_key([key])[key]
    assert record.event is not None and record.event.dagster_event is not None, key
    evaluation = record.event.dagster_event.event_specific_data
    return {**{k: v.value for k, v in evaluation.metadata.items()}, "passed": evaluation.passed}


@pytest.mark.slow
def test_a_support_ticket_project_runs_end_to_end(tmp_path: Path, receiver: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FACTORY_GATEWAY_ADMIN_TOKEN", "second-project-admin")
    root = tmp_path / "support"
    second_project(root)
    raw = yaml.safe_load((root / "factory.yaml").read_text())
    raw["gateway"] = {**raw.get("gateway", {}), "port": free_port()}
    raw["alerts"] = {"webhooks": [{"url": f"{receiver}/alerts", "retries": 0}]}
    (root / "factory.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    path = str(root / "factory.yaml")
    try:
        ran = CliRunner().invoke(main, ["materialize", "--config", path])
        assert ran.exit_code == 0, ran.output
        config = load_config(path)
        store = resources_for(config)["store"]
        evaluation = store.read_ref("evaluation/triage-eval")
        scores = evaluation["scores"]
        # its own metric (the category the answer pattern extracts), through the gate
        assert evaluation["gate"].startswith("PROMOTE (vs base): exact_match")
        assert scores["candidate"]["exact_match"] > scores["base"]["exact_match"] + 0.2
        data = latest("dataset/tickets")
        assert data["rows_in"] == 240 + 120  # the JSONL chats and the alpaca CSV
        assert latest("adapter/triage-dpo")["steps"] == 10
        served = latest("served_evaluation/support")
        offline = scores["candidate"]["exact_match"]
        print(f"second project: base {scores['base']['exact_match']:.3f}, adapter "
              f"{offline:.3f} offline, {served['triage_exact_match']:.3f} served; "
              f"index {latest_check('index/packages', 'retrieval_quality')['hit_at_3']}")
        assert abs(served["triage_exact_match"] - offline) <= 0.15  # greedy on both sides
        mixture = latest("mixture/triage-mix")
        print(f"mixture {mixture['weights']} served {served['triage-mix_exact_match']:.3f}")
        assert mixture["trials"] == 4  # (1, 0), (0.5, 0.5), (0, 1) and the declared (0.7, 0.3)
        assert served["triage-mix_exact_match"] > served["triage:base_exact_match"] + 0.2

        # who learnt from a ticket: listed from lineage, nothing changed by a dry run
        ticket = json.loads((root / "data" / "tickets.jsonl").read_text().splitlines()[5])
        dry = CliRunner().invoke(main, ["forget", "--config", path, "--dataset", "tickets",
                                        "--match", ticket["messages"][-2]["content"],
                                        "--dry-run"])
        assert dry.exit_code == 0, dry.output
        for line in ("adapter triage: trained on erased data in", "adapter triage-b:",
                     "mixture triage-mix: built from them in",
                     "deployment support: was serving one of them"):
            assert line in dry.output, dry.output
        assert not Ledger.read(store).entries
        assert latest_check("index/packages", "retrieval_quality")["hit_at_3"] >= 0.8
        assert latest_check("index/handbook", "retrieval_quality")["hit_at_5"] == 1.0
        watched(config)
    finally:
        CliRunner().invoke(main, ["stop", "--config", path])


def watched(config: FactoryConfig) -> None:
    """The demo's watch on SmolLM2 through the real gateway: the monitor's totals match what
    was sent; tickets pass the drift check, arithmetic fails it; one alert; the trigger
    requests the served evaluation and nothing else retrains."""
    defs = make_definitions(config)
    with dg.DagsterInstance.get() as instance:
        _, automation = requested(defs, instance)
    key = playground.provision(config)
    url = playground.start(config)
    math = [row["messages"][1]["content"]  # type: ignore[index]
            for row in math_problems.generate(40, seed=5)]
    phases = playground.watch(config, url, key, shifted=math)
    assert phases is not None
    calm, drifted = phases
    print("second project watched:\n  " + playground.watch_summary(config, url, phases))
    assert calm["prompts"] >= 20 and calm["requests"] == calm["prompts"]
    assert drifted["requests"] == calm["prompts"] + drifted["prompts"]
    assert all(calm["checks"].values()), calm
    assert drifted["checks"] == {"error_rate": True, "latency_p99": True,
                                 "feedback_score": True, "drift": False}, drifted
    assert drifted["drift"]["energy_distance"] > calm["drift"]["energy_distance"]
    assert [(r["body"]["state"], r["body"]["check"]) for r in Receiver.received] == [
        ("firing", "drift")]
    sensor = defs.resolve_sensor_def("monitor_trigger_support")
    with dg.DagsterInstance.get() as instance:
        fired = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, definitions=defs))
        assert [e.metadata["failed"].value for e in fired.asset_events] == [["drift"]]
        observe(instance, fired)
        keys, _ = requested(defs, instance, automation)
    assert "served_evaluation/support" in keys
    assert not {k for k in keys if k.startswith(("adapter/", "dataset/", "promotion/"))}, keys
