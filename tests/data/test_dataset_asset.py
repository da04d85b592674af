"""The dataset asset in Dagster: versioned by content, quarantine stored, checks gate training."""

import json
from pathlib import Path

import dagster as dg
import pytest

from config.loading import load_config
from pipelines.graph import resources_for
from tests.support import gallery
from tests.support.dataset_projects import KEY, project, run, version


def test_version_is_stable_and_changes_with_one_row(tmp_path: Path) -> None:
    gallery.write_good(tmp_path / "data")
    cfg = project(tmp_path)
    first, second = version(run(cfg)), version(run(cfg))
    assert first == second
    rows = (tmp_path / "data" / "alpaca.jsonl").read_text().splitlines()
    rows[0] = rows[0].replace("Add 2 and 3.", "Add 2 and 4.")
    (tmp_path / "data" / "alpaca.jsonl").write_text("\n".join(rows) + "\n")
    assert version(run(cfg)) != first


def test_quarantine_artifact_and_metadata(tmp_path: Path) -> None:
    gallery.write_good(tmp_path / "data")
    gallery.write_broken_rows(tmp_path / "data")
    cfg = project(tmp_path, quality={"max_rejected_fraction": 1.0, "min_test": 0})
    result = run(cfg)
    assert result.success
    (event,) = result.get_asset_materialization_events()
    meta = event.materialization.metadata
    assert meta["quarantine_reasons"].value["invalid_json"] == 1
    assert meta["quarantined"].value == 11
    assert "| data/broken.jsonl | 7 |" in meta["quarantine_examples"].value
    store = resources_for(load_config(cfg))["store"]
    folder = store.local_dir(store.read_ref("dataset/chats")["prefix"])
    quarantined = [json.loads(line) for line in (folder / "quarantine.jsonl").read_text()
                   .splitlines()]
    row7 = next(q for q in quarantined if q["row"] == 7)
    assert row7["file"] == "data/broken.jsonl" and row7["reason"] == "invalid_json"
    assert row7["record"].startswith('{"instruction": "broken"')


def test_too_many_bad_rows_block_training(tmp_path: Path) -> None:
    gallery.write_broken_rows(tmp_path / "data")
    cfg = project(tmp_path, quality={"max_rejected_fraction": 0.2, "min_test": 0})
    result = run(cfg, KEY, dg.AssetKey(["adapter", "lora"]))
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert not checks["rejected_fraction"].passed
    assert checks["rejected_fraction"].metadata["limit"].value == 0.2
    materialized = {e.asset_key for e in result.get_asset_materialization_events()}
    assert dg.AssetKey(["adapter", "lora"]) not in materialized  # training never started


def test_stratified_split_is_exact_per_stratum(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    rows = [{"prompt": f"{topic} question {i}", "completion": "answer", "topic": topic}
            for topic, n in (("math", 40), ("law", 10)) for i in range(n)]
    (data / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = project(tmp_path, split={"val": 0.0, "test": 0.2, "seed": 3, "stratify_by": "topic"})
    result = run(cfg)
    assert result.success
    store = resources_for(load_config(cfg))["store"]
    folder = store.local_dir(store.read_ref("dataset/chats")["prefix"])
    test_rows = (folder / "test.jsonl").read_text().splitlines()
    topics = [json.loads(r)["messages"][0]["content"].split()[0] for r in test_rows]
    assert sorted(topics) == ["law"] * 2 + ["math"] * 8


@pytest.mark.parametrize("broken", ["binary", "truncated"])
def test_bad_file_fails_the_run_naming_the_file(tmp_path: Path, broken: str) -> None:
    path = gallery.write_broken_files(tmp_path / "data")[broken]
    for other in (tmp_path / "data").iterdir():
        if other != path:
            other.unlink()
    result = run(project(tmp_path))
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    message = failure.step_failure_data.error.cause.message  # type: ignore[union-attr]
    assert f"data/{path.name}:" in message and "Fix:" in message
    store = resources_for(load_config(project(tmp_path)))["store"]
    assert store.list("refs/dataset/") == []  # nothing half-written was published
