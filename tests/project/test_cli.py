"""`factory materialize` on a user's own project: a selection runs with the upstream it is
missing, a wrong key lists the assets, and an asset whose input was never made names it."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest
import yaml
from click.testing import CliRunner

from config.loading import load_config
from pipelines.cli import main
from pipelines.graph import make_definitions


def notes_project(root: Path) -> Path:
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "harbour.txt").write_text("The harbour master is Ingrid Solberg.")
    (root / "factory.yaml").write_text(yaml.safe_dump({
        "storage": {"object_store": "file://store", "work_dir": "work"},
        "corpora": {"notes": {"source": {"path": "docs"}}}}))
    return root / "factory.yaml"


def test_a_selection_runs_with_its_missing_upstream_and_only_that(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    path = notes_project(tmp_path)
    first = CliRunner().invoke(main, ["materialize", "--config", str(path),
                                      "--select", "index/notes"])
    assert first.exit_code == 0, first.output
    assert "materialized 2 asset(s)" in first.output and "corpus/notes, index/notes" in first.output
    again = CliRunner().invoke(main, ["materialize", "--config", str(path),
                                      "--select", "index/notes"])
    assert again.exit_code == 0 and "materialized 1 asset(s)" in again.output  # corpus exists

    wrong = CliRunner().invoke(main, ["materialize", "--config", str(path),
                                      "--select", "index/note"])
    assert wrong.exit_code != 0 and "Traceback" not in wrong.output
    assert "no asset index/note" in wrong.output and "assets are: corpus/notes" in wrong.output


def test_an_asset_whose_input_was_never_made_names_it(tmp_path: Path) -> None:
    config = load_config(notes_project(tmp_path))
    job = make_definitions(config).resolve_job_def("everything")
    result = job.execute_in_process(instance=dg.DagsterInstance.ephemeral(), raise_on_error=False,
                                    asset_selection=[dg.AssetKey(["index", "notes"])])
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    message = failure.step_failure_data.error.message
    assert "no 'corpus/notes' has been materialized yet" in message
    assert "materialize corpus/notes first" in message


def test_init_writes_a_valid_project_and_never_overwrites_one(tmp_path: Path) -> None:
    """That the sample runs end to end is tests/project/test_second_project.py's (it starts
    from it)."""
    root = tmp_path / "support"
    made = CliRunner().invoke(main, ["init", str(root)])
    assert made.exit_code == 0, made.output
    config = load_config(root / "factory.yaml")
    assert config.evaluations["triage-eval"].promotion.primary == "exact_match"
    assert len((root / "data" / "tickets.jsonl").read_text().splitlines()) == 240
    first = json.loads((root / "data" / "tickets.jsonl").open().readline())
    assert first["messages"][0]["role"] == "system" and len(first["messages"]) == 5  # multi-turn
    assert "factory materialize" in made.output
    again = CliRunner().invoke(main, ["init", str(root)])
    assert again.exit_code != 0 and "exists; choose an empty directory" in again.output
