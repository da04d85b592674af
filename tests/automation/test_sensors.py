"""Watch sensors evaluated the way the daemon does (a cursor carried between ticks) against a
real S3-compatible server and a real folder, and the automation conditions they feed, evaluated
as Dagster's automation sensor does on an instance: what rebuilds, once, and what a failed
blocking check stops."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml

from config.loading import ConfigError, load_config
from ingest.listings import Entry
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


def observe(instance: dg.DagsterInstance, tick_result: Any) -> None:
    """What the daemon does with a tick's observations: record them on the instance."""
    for event in tick_result.asset_events:
        instance.report_runless_asset_event(event)


def requested(defs: dg.Definitions, instance: dg.DagsterInstance, cursor: Any = None
              ) -> tuple[set[str], Any]:
    """One tick of the automation sensor: the assets it asks to run, and its cursor."""
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()
            if result.get_num_requested(k)}
    return keys, result.cursor


def test_s3_sensor_records_each_change_once_and_survives_restarts(
        tmp_path: Path, s3_endpoint: str, s3_env: None) -> None:
    """The watch sensor records a change as an observation of the listing; the automation
    condition re-indexes once per change, also when a crash makes the sensor record it twice."""
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
    assert defs.resolve_sensor_def("automation").default_status == \
        dg.DefaultSensorStatus.RUNNING

    with dg.DagsterInstance.ephemeral() as instance:
        empty, cursor = tick(defs, "watch_corpus_notes", None)
        assert not empty.asset_events and not empty.run_requests
        keys, automation = requested(defs, instance)
        assert keys == set()  # nothing listed yet: nothing to index
        s3.put_object(Bucket="watched", Key="docs/a.txt", Body=b"alpha")
        s3.put_object(Bucket="watched", Key="docs/b.txt", Body=b"beta")  # same second, likely
        s3.put_object(Bucket="watched", Key="other/c.txt", Body=b"not watched")
        added, after_add = tick(defs, "watch_corpus_notes", cursor)
        (observation,) = added.asset_events
        assert observation.asset_key == dg.AssetKey(["watched", "corpus", "notes"])
        assert observation.metadata["changes"].value == "2 added, 0 updated, 0 removed"
        observe(instance, added)
        keys, automation = requested(defs, instance, automation)
        assert keys == {"corpus/notes", "index/notes"}  # one tick: one run of both
        for key in keys:  # that run
            instance.report_runless_asset_event(dg.AssetMaterialization(key))
        # the daemon died before storing the sensor's cursor: the retry records the same
        # listing again, which is no change to the automation
        retried, _ = tick(defs, "watch_corpus_notes", cursor)
        assert retried.asset_events[0].tags == observation.tags
        observe(instance, retried)
        keys, automation = requested(defs, instance, automation)
        assert keys == set()
        quiet, _ = tick(defs, "watch_corpus_notes", after_add)
        assert not quiet.asset_events and quiet.skip_message

        s3.put_object(Bucket="watched", Key="docs/a.txt", Body=b"alpha, revised")
        s3.delete_object(Bucket="watched", Key="docs/b.txt")
        changed, _ = tick(defs, "watch_corpus_notes", after_add)
        assert changed.asset_events[0].metadata["changes"].value == (
            "0 added, 1 updated, 1 removed")
        observe(instance, changed)
        assert requested(defs, instance, automation)[0] == {"corpus/notes", "index/notes"}


def dataset_project(tmp_path: Path) -> dg.Definitions:
    (tmp_path / "incoming").mkdir()
    (tmp_path / "factory.yaml").write_text(yaml.safe_dump({
        "storage": {"object_store": "file://store", "work_dir": "work"},
        "base_models": {"tiny": {"source": "local"}},
        "datasets": {"support": {"sources": [{"path": "incoming"}], "watch": {"interval_s": 10}}},
        "adapters": {"support-lora": {"base_model": "tiny", "dataset": "support"}},
        "evaluations": {"support-eval": {"adapter": "support-lora"}},
        "deployments": {"local": {"base_model": "tiny", "adapters": ["support-lora"],
                                  "evaluate": {}}},
        "schedules": {"retrain": "0 3 * * 0"}}))
    return make_definitions(load_config(tmp_path / "factory.yaml"))


def test_a_changed_dataset_retrains_evaluates_promotes_and_serves_in_one_run(
        tmp_path: Path) -> None:
    defs = dataset_project(tmp_path)
    with dg.DagsterInstance.ephemeral() as instance:
        instance.report_runless_asset_event(dg.AssetMaterialization("base_model/tiny"))
        _, automation = requested(defs, instance)
        _, cursor = tick(defs, "watch_dataset_support", None)
        (tmp_path / "incoming" / "batch-1.jsonl").write_text(
            '{"prompt": "hi", "completion": "hello"}\n')
        result, _ = tick(defs, "watch_dataset_support", cursor)
        assert result.asset_events[0].metadata["changes"].value == "1 added, 0 updated, 0 removed"
        observe(instance, result)
        keys, _ = requested(defs, instance, automation)
    assert keys == {"dataset/support", "adapter/support-lora", "evaluation/support-eval",
                    "promotion/support-lora", "deployment/local", "served_evaluation/local"}


def test_a_failed_promotion_gate_stops_the_chain_before_promotion(tmp_path: Path) -> None:
    defs = dataset_project(tmp_path)
    evaluation = dg.AssetKey(["evaluation", "support-eval"])
    gate = next(k for k in defs.resolve_asset_graph().asset_check_keys
                if k.asset_key == evaluation and k.name == "promotion_gate")
    with dg.DagsterInstance.ephemeral() as instance:
        _, cursor = requested(defs, instance)
        for key in ("base_model/tiny", "dataset/support", "adapter/support-lora"):
            instance.report_runless_asset_event(dg.AssetMaterialization(key))
        instance.report_runless_asset_event(dg.AssetMaterialization(evaluation))
        instance.report_runless_asset_event(dg.AssetCheckEvaluation(
            asset_key=evaluation, check_name=gate.name, passed=False,
            severity=dg.AssetCheckSeverity.ERROR))
        keys, _ = requested(defs, instance, cursor)
    assert "promotion/support-lora" not in keys


def test_schedules_are_conditions_on_the_assets(tmp_path: Path) -> None:
    graph = dataset_project(tmp_path).resolve_asset_graph()

    def label(key: str) -> str:
        condition = graph.get(dg.AssetKey(key.split("/"))).automation_condition
        return condition.get_label() if condition else ""

    assert "0 3 * * 0" in label("dataset/support")  # schedules.retrain
    assert "0 2 * * *" in label("served_evaluation/local")  # schedules.reevaluate (default)
    assert label("base_model/tiny") == ""  # a base model changes when its user says so


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

        assert len(first_tick().asset_events) == 1  # never materialized: index it
        assert defs.resolve_implicit_global_asset_job_def().execute_in_process(
            instance=instance, asset_selection=[dg.AssetKey(["corpus", "notes"]),
                                                dg.AssetKey(["index", "notes"])]).success
        quiet = first_tick()
        assert not quiet.asset_events and "what corpus/notes last materialized" in \
            quiet.skip_message
        assert quiet.cursor  # the next ticks diff against this listing
        (tmp_path / "docs" / "b.txt").unlink()
        assert first_tick().asset_events[0].metadata["changes"].value == (
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
        assert not result.asset_events
        (tmp_path / corpus / "notes.xyz").write_bytes(b"not a document")
        (tmp_path / corpus / "standup.ogg").write_bytes(b"OggS")
    calls, _ = tick(defs, "watch_corpus_calls", cursors["calls"])
    assert calls.asset_events[0].metadata["changes"].value == "1 added, 0 updated, 0 removed"
    memos, _ = tick(defs, "watch_corpus_memos", cursors["memos"])
    assert not memos.asset_events


def test_an_unpromoted_studio_training_does_not_hold_back_a_deployment() -> None:
    """A deployment lists the Studio's adapters too; one never promoted is an input that may be
    missing, while a missing declared input still holds the rebuild back."""
    from sensors.automation import rebuild

    @dg.asset(key=["promotion", "declared"])
    def declared() -> None: ...

    @dg.asset(key=["promotion", "team--draft"])
    def studio_draft() -> None: ...

    def deployment(optional: list[dg.AssetKey]) -> dg.AssetsDefinition:
        @dg.asset(key=["deployment", "local"], deps=[declared, studio_draft],
                  automation_condition=rebuild(optional))
        def _deployment() -> None: ...

        return _deployment

    for optional, expected in (([studio_draft.key], 1), ([], 0)):
        assets = [declared, studio_draft, deployment(optional)]
        with dg.DagsterInstance.ephemeral() as instance:
            first = dg.evaluate_automation_conditions(defs=assets, instance=instance)
            instance.report_runless_asset_event(dg.AssetMaterialization(["promotion", "declared"]))
            result = dg.evaluate_automation_conditions(defs=assets, instance=instance,
                                                       cursor=first.cursor)
        assert result.get_num_requested(dg.AssetKey(["deployment", "local"])) == expected
