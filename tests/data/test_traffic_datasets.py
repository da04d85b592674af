"""Datasets from traffic (issue #43): what people said about the chats a real gateway kept
becomes SFT rows, KTO rows and DPO pairs through the dataset asset, and the feedback sensor
rebuilds the dataset (and what trains on it) once enough new feedback arrived, and not before.
The gateway runs for real (uvicorn, SQLite) in front of the fake engine."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import yaml

from config.loading import load_config
from curation.splits import SPLITS
from pipelines.graph import make_definitions
from store.artifacts import ArtifactStore
from tests.automation.test_sensors import observe, requested, tick
from tests.support.capture import ADMIN_ENV, ADMIN_TOKEN, Running, Tenant, running_gateway
from tests.support.projects import run_assets


@pytest.fixture(scope="module")
def kept(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    with pytest.MonkeyPatch.context() as env:
        env.setenv(ADMIN_ENV, ADMIN_TOKEN)
        yield from running_gateway("sqlite", tmp_path_factory.mktemp("traffic"))


@pytest.fixture(autouse=True)
def admin_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ADMIN_ENV, ADMIN_TOKEN)  # the control plane's side of the contract


def project(root: Path, kept: Running, tenant: Tenant, rebuild_after: int = 20,
            token_env: str = ADMIN_ENV) -> dg.Definitions:
    source = {"traffic": tenant.project, "model": "adapter-a", "rebuild_after": rebuild_after,
              "poll_s": 5}
    common = {"sources": [source], "dedupe": {"near": False},
              "split": {"val": 0.0, "test": 0.2},
              "quality": {"min_train": 0, "min_test": 0, "max_rejected_fraction": 0.6}}
    (root / "factory.yaml").write_text(yaml.safe_dump({
        "storage": {"object_store": "file://store", "work_dir": "work"},
        "gateway": {"url": kept.url, "admin_token_env": token_env},
        "base_models": {"tiny": {"source": "local"}},
        "datasets": {"rated": {"kind": "sft", **common},
                     "thumbs": {"kind": "feedback", **common},
                     "choices": {"kind": "preference", **common}},
        "adapters": {"rated-lora": {"base_model": "tiny", "dataset": "rated"}}}))
    return make_definitions(load_config(root / "factory.yaml"))


def rows(root: Path, dataset: str) -> list[dict]:
    store = ArtifactStore(url="file://store", root=str(root))
    ref = store.current("dataset", dataset)
    folder = store.local_dir(ref["prefix"])
    return [json.loads(line) for split in SPLITS
            for line in (folder / f"{split}.jsonl").read_text().splitlines()]


def test_feedback_becomes_sft_rows_kto_rows_and_dpo_pairs(kept: Running, tmp_path: Path) -> None:
    tenant = kept.project("request")
    liked = kept.ask(tenant, "How do I reset my password on the portal?")["id"]
    disliked = kept.ask(tenant, "Can I get a refund after thirty days?")["id"]
    corrected = kept.ask(tenant, "What are your opening hours on Sunday?")["id"]
    scored = kept.ask(tenant, "Where is the invoice for my last order?")["id"]
    commented = kept.ask(tenant, "Tell me a joke about databases please")["id"]
    compared = kept.ask(tenant, "Which plan suits a team of five?", compare_with="adapter-b")
    kept.rate(tenant, liked, rating="up")
    kept.rate(tenant, disliked, rating="down")
    kept.rate(tenant, corrected, correction="We open at 10:00 on Sundays.")
    kept.rate(tenant, scored, score=0.9)
    kept.rate(tenant, commented, comment="no rating, just a note")
    kept.rate(tenant, compared["id"], better_than=compared["comparison"][0]["id"])
    defs = project(tmp_path, kept, tenant)

    result = run_assets(defs, "dataset/rated", "dataset/thumbs", "dataset/choices")
    assert result.success

    sft = {r["messages"][0]["content"]: r["messages"][-1]["content"] for r in rows(tmp_path,
                                                                                 "rated")}
    assert sft == {"How do I reset my password on the portal?": "tok tok tok tok ",
                   "What are your opening hours on Sunday?": "We open at 10:00 on Sundays.",
                   "Where is the invoice for my last order?": "tok tok tok tok "}
    kto = sorted((r["messages"][0]["content"][:12], r["completion"][:8], r["label"])
                 for r in rows(tmp_path, "thumbs"))
    assert kto == [("Can I get a ", "tok tok ", False), ("How do I res", "tok tok ", True),
                   ("What are you", "We open ", True), ("What are you", "tok tok ", False)]
    dpo = sorted((r["messages"][0]["content"][:12], r["chosen"][:8], r["rejected"][:8])
                 for r in rows(tmp_path, "choices"))
    # adapter-a's answer was chosen over adapter-b's: both are "tok ..." from the fake engine,
    # so curation quarantines the pair whose answers are the same (and says so)
    assert dpo == [("What are you", "We open ", "tok tok ")]
    meta = result.asset_materializations_for_node("dataset__choices")[0].metadata
    assert meta["traffic_read"].value == {tenant.project: {
        "feedback": 6, "newest_id": meta["traffic_read"].value[tenant.project]["newest_id"],
        "without_rows": 4}}
    assert meta["traffic_feedback"].value == 6
    assert meta["quarantine_reasons"].value == {"identical_pair": 1}


def test_the_dataset_rebuilds_when_enough_new_feedback_arrived_and_not_before(
        kept: Running, tmp_path: Path) -> None:
    tenant = kept.project("request")
    defs = project(tmp_path, kept, tenant, rebuild_after=3)
    sensor = "feedback_dataset_rated"
    assert defs.resolve_sensor_def(sensor).default_status == dg.DefaultSensorStatus.RUNNING
    chats = [kept.ask(tenant, f"question number {i}")["id"] for i in range(4)]
    with dg.DagsterInstance.ephemeral() as instance:
        instance.report_runless_asset_event(dg.AssetMaterialization("base_model/tiny"))
        _, automation = requested(defs, instance)
        quiet, cursor = tick(defs, sensor, None)
        assert not quiet.asset_events and "0 new feedback of the 3" in quiet.skip_message
        for chat in chats[:2]:
            kept.rate(tenant, chat, rating="up")
        short, cursor = tick(defs, sensor, cursor)
        assert not short.asset_events and "2 new feedback of the 3" in short.skip_message
        assert requested(defs, instance, automation)[0] == set()
        kept.rate(tenant, chats[2], correction="a better answer")
        crossed, cursor = tick(defs, sensor, cursor)
        (observation,) = crossed.asset_events
        assert observation.asset_key == dg.AssetKey(["feedback", "dataset", "rated"])
        assert observation.metadata["new"].value == 3
        observe(instance, crossed)
        keys, automation = requested(defs, instance, automation)
        assert keys == {"dataset/rated", "adapter/rated-lora"}
        for key in keys:
            instance.report_runless_asset_event(dg.AssetMaterialization(key))
        kept.rate(tenant, chats[3], rating="down")
        again, _ = tick(defs, sensor, cursor)
        assert not again.asset_events and "1 new feedback of the 3" in again.skip_message
        assert requested(defs, instance, automation)[0] == set()


def test_a_gateway_that_refuses_the_admin_token_fails_the_dataset_clearly(
        kept: Running, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tenant = kept.project("request")
    monkeypatch.setenv("TRAFFIC_TEST_WRONG_TOKEN", "not-the-token")
    defs = project(tmp_path, kept, tenant, token_env="TRAFFIC_TEST_WRONG_TOKEN")
    result = run_assets(defs, "dataset/rated", raise_on_error=False)
    assert not result.success
    failure = result.failure_data_for_node("dataset__rated")
    assert failure is not None and "answered" in str(failure.error) and "401" in str(
        failure.error)
    skipped, _ = tick(defs, "feedback_dataset_rated", None)
    assert "the gateway did not answer" in skipped.skip_message


def test_forget_purges_the_kept_chat_its_feedback_and_the_dataset_rows(
        kept: Running, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from pipelines.cli import main

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    tenant = kept.project("request")
    secret = kept.ask(tenant, "My card ends 4242 and my name is Zebra Umbrella")["id"]
    spared = kept.ask(tenant, "What time do you open tomorrow morning?")["id"]
    kept.rate(tenant, secret, correction="Thanks, Zebra Umbrella, noted.")
    kept.rate(tenant, spared, rating="up")
    defs = project(tmp_path, kept, tenant)
    assert run_assets(defs, "dataset/rated").success
    assert len(rows(tmp_path, "rated")) == 2

    result = CliRunner().invoke(main, ["forget", "--config", str(tmp_path / "factory.yaml"),
                                       "--dataset", "rated", "--match", "Zebra Umbrella"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "kept chats: purged 1 stored completion(s) and 1 feedback" in result.output
    with kept.http(tenant.key) as http:
        assert http.get(f"/v1/chat/completions/{secret}").status_code == 404
        assert http.get(f"/v1/chat/completions/{spared}").status_code == 200
    assert [r["messages"][0]["content"] for r in rows(tmp_path, "rated")] == [
        "What time do you open tomorrow morning?"]
