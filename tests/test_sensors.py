"""Watch sensors evaluated the way the daemon does (a cursor carried between ticks) against a
real S3-compatible server and a real folder; and the schedules a project gets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml

from assets.ingest.listings import Entry
from config.loading import ConfigError, load_config
from pipelines.graph import make_definitions
from sensors.changes import diff


def tick(defs: dg.Definitions, name: str, cursor: str | None) -> tuple[Any, str | None]:
    sensor = defs.resolve_sensor_def(name)
    with dg.DagsterInstance.ephemeral() as instance:
        context = dg.build_sensor_context(instance=instance, cursor=cursor,
                                          definitions=defs)
        result = sensor.evaluate_tick(context)
    return result, result.cursor


def test_same_second_write_and_deletion_are_not_missed() -> None:
    first = diff([Entry("a.txt", 100.0, "e1")], None)
    assert first.added == ["a.txt"]
    # written in the same second as the newest object the cursor has seen
    second = diff([Entry("a.txt", 100.0, "e1"), Entry("b.txt", 100.0, "e2")], first.cursor())
    assert second.added == ["b.txt"] and not second.updated
    third = diff([Entry("b.txt", 100.0, "e3")], second.cursor())
    assert third.removed == ["a.txt"] and third.updated == ["b.txt"]
    assert not diff([Entry("b.txt", 100.0, "e3")], third.cursor()).any


def test_s3_sensor_requests_one_run_per_change_and_survives_restarts(
        tmp_path: Path, s3_endpoint: str, s3_env: None) -> None:
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket="watched")
    (tmp_path / "factory.yaml").write_text(yaml.safe_dump({
        "storage": {"object_store": "file://store", "work_dir": "work",
                    "s3_endpoint_url": s3_endpoint},
        "corpora": {"notes": {"source": {"s3": "s3://watched/docs/"}}}}))
    defs = make_definitions(load_config(tmp_path / "factory.yaml"))
    sensor = defs.resolve_sensor_def("watch_corpus_notes")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert sensor.job_name == "reindex_notes"

    empty, cursor = tick(defs, "watch_corpus_notes", None)
    assert not empty.run_requests
    s3.put_object(Bucket="watched", Key="docs/a.txt", Body=b"alpha")
    s3.put_object(Bucket="watched", Key="docs/b.txt", Body=b"beta")  # same second, likely
    s3.put_object(Bucket="watched", Key="other/c.txt", Body=b"not watched")
    added, after_add = tick(defs, "watch_corpus_notes", cursor)
    assert len(added.run_requests) == 1
    run = added.run_requests[0]
    assert run.tags["factory/changes"] == "2 added, 0 updated, 0 removed"
    # the daemon died before storing the cursor: the retry asks for the same run key, which
    # Dagster launches only once
    retried, _ = tick(defs, "watch_corpus_notes", cursor)
    assert retried.run_requests[0].run_key == run.run_key
    quiet, _ = tick(defs, "watch_corpus_notes", after_add)
    assert not quiet.run_requests and quiet.skip_message

    s3.put_object(Bucket="watched", Key="docs/a.txt", Body=b"alpha, revised")
    s3.delete_object(Bucket="watched", Key="docs/b.txt")
    changed, _ = tick(defs, "watch_corpus_notes", after_add)
    assert changed.run_requests[0].tags["factory/changes"] == "0 added, 1 updated, 1 removed"
    assert changed.run_requests[0].run_key != run.run_key


def test_dataset_sensor_retrains_downstream_and_schedules_exist(tmp_path: Path) -> None:
    data = tmp_path / "incoming"
    data.mkdir()
    (tmp_path / "factory.yaml").write_text(yaml.safe_dump({
        "storage": {"object_store": "file://store", "work_dir": "work"},
        "base_models": {"tiny": {"source": "local"}},
        "datasets": {"support": {"sources": [{"path": "incoming"}], "watch": {"interval_s": 10}}},
        "adapters": {"support-lora": {"base_model": "tiny", "dataset": "support"}},
        "evaluations": {"support-eval": {"adapter": "support-lora"}},
        "deployments": {"local": {"base_model": "tiny", "adapters": ["support-lora"],
                                  "evaluate": {}}},
        "schedules": {"retrain": "0 3 * * 0"}}))
    defs = make_definitions(load_config(tmp_path / "factory.yaml"))
    job = defs.resolve_job_def("retrain_support")
    keys = {k.to_user_string() for k in job.asset_layer.executable_asset_keys}
    assert {"dataset/support", "adapter/support-lora", "evaluation/support-eval",
            "promotion/support-lora", "deployment/local"} <= keys
    assert "base_model/tiny" not in keys

    _, cursor = tick(defs, "watch_dataset_support", None)
    (data / "batch-1.jsonl").write_text('{"prompt": "hi", "completion": "hello"}\n')
    result, _ = tick(defs, "watch_dataset_support", cursor)
    assert result.run_requests[0].tags["factory/changes"] == "1 added, 0 updated, 0 removed"
    assert defs.resolve_sensor_def("watch_dataset_support").job_name == "retrain_support"

    schedules = {s.name: s for s in defs.schedules or []}
    assert schedules["nightly_reevaluation"].cron_schedule == "0 2 * * *"
    assert schedules["scheduled_retrain"].cron_schedule == "0 3 * * 0"
    reevaluate = defs.resolve_job_def("reevaluate")
    assert {k.to_user_string() for k in reevaluate.asset_layer.executable_asset_keys} == {
        "served_evaluation/local"}


def test_watch_on_a_generated_dataset_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "factory.yaml").write_text(yaml.safe_dump({"datasets": {"math": {
        "sources": [{"generator": "math_word_problems"}], "watch": {}}}}))
    with pytest.raises(ConfigError, match=r"datasets\.math: watch: needs a path or s3 source"):
        load_config(tmp_path / "factory.yaml")


def test_a_sensor_without_a_cursor_starts_from_what_was_materialized(tmp_path: Path) -> None:
    """First tick after `factory materialize`: the folder is what the corpus read, so nothing
    runs again; a change made before that first tick still runs once."""
    (tmp_path / "docs").mkdir()
    for name in ("a.txt", "b.txt"):
        (tmp_path / "docs" / name).write_text(f"Document {name} is about harbours.")
    (tmp_path / "factory.yaml").write_text(yaml.safe_dump({
        "storage": {"object_store": "file://store", "work_dir": "work"},
        "corpora": {"notes": {"source": {"path": "docs"}}}}))
    defs = make_definitions(load_config(tmp_path / "factory.yaml"))
    sensor = defs.resolve_sensor_def("watch_corpus_notes")
    with dg.DagsterInstance.ephemeral() as instance:
        def first_tick() -> Any:
            return sensor.evaluate_tick(dg.build_sensor_context(
                instance=instance, cursor=None, definitions=defs))

        assert len(first_tick().run_requests) == 1  # never materialized: index it
        assert defs.resolve_job_def("reindex_notes").execute_in_process(
            instance=instance).success
        quiet = first_tick()
        assert not quiet.run_requests and "what corpus/notes last materialized" in \
            quiet.skip_message
        assert quiet.cursor  # the next ticks diff against this listing
        (tmp_path / "docs" / "b.txt").unlink()
        assert first_tick().run_requests[0].tags["factory/changes"] == (
            "1 added, 0 updated, 0 removed")  # no cursor: the listing is all news


def test_a_recording_dropped_into_a_transcribing_corpus_folder_starts_a_run(
        tmp_path: Path) -> None:
    """A corpus that transcribes recordings watches them like documents; a corpus that does
    not (it would quarantine them) and other files start no run."""
    for folder in ("calls", "memos"):
        (tmp_path / folder).mkdir()
    (tmp_path / "factory.yaml").write_text(yaml.safe_dump({
        "storage": {"object_store": "file://store", "work_dir": "work"},
        "base_models": {"whisper": {"source": "ct2:whisper-folder"}},
        "deployments": {"speech": {"base_model": "whisper", "max_loras": 0,
                                   "max_model_len": 448}},
        "corpora": {"calls": {"source": {"path": "calls"}, "transcribe": "speech"},
                    "memos": {"source": {"path": "memos"}}}}))
    defs = make_definitions(load_config(tmp_path / "factory.yaml"))
    cursors = {}
    for corpus in ("calls", "memos"):
        result, cursors[corpus] = tick(defs, f"watch_corpus_{corpus}", None)
        assert not result.run_requests
        (tmp_path / corpus / "notes.xyz").write_bytes(b"not a document")
        (tmp_path / corpus / "standup.ogg").write_bytes(b"OggS")
    calls, _ = tick(defs, "watch_corpus_calls", cursors["calls"])
    assert calls.run_requests[0].tags["factory/changes"] == "1 added, 0 updated, 0 removed"
    memos, _ = tick(defs, "watch_corpus_memos", cursors["memos"])
    assert not memos.run_requests
