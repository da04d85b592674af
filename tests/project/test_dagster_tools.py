"""Dagster's own tools read our projects: factory.yaml loads as a component
(pipelines/component.py, declared in pipelines/defs/), so `dg check defs`, `dg list defs` and
`dg launch` work on the demo, the second project and any project file ($FACTORY_CONFIG), beside
the `factory` CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from config.loading import load_config
from pipelines.graph import resources_for
from tests.support.projects import REPO, TESTS, second_project

DG = Path(sys.executable).with_name("dg")


def dg(*args: str, config: Path, home: Path | None = None) -> subprocess.CompletedProcess:
    """`dg` in the repository (the dg project) on the project file `config`."""
    env = {**os.environ, "FACTORY_CONFIG": str(config),
           **({"DAGSTER_HOME": str(home)} if home else {})}
    return subprocess.run([str(DG), *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.slow  # dg loads the project twice
def test_dg_lists_every_asset_of_the_demo_and_checks_the_second_project(
        tmp_path: Path) -> None:
    listed = dg("list", "defs", "--json", config=REPO / "factory.yaml")
    assert listed.returncode == 0, listed.stderr[-3000:]
    defs = json.loads(listed.stdout)
    config = load_config(REPO / "factory.yaml")
    declared = {f"{kind}/{name}" for kind, table in (
        ("base_model", config.base_models), ("dataset", config.datasets),
        ("adapter", config.adapters), ("evaluation", config.evaluations),
        ("deployment", config.deployments), ("corpus", config.corpora),
        ("index", config.corpora)) for name in table}
    assert declared <= {a["asset_key"] for a in defs["assets"]}
    assert {"watch_corpus_meetings"} <= {s["name"] for s in defs["sensors"]}

    second_project(tmp_path / "support")
    checked = dg("check", "defs", config=tmp_path / "support" / "factory.yaml")
    assert checked.returncode == 0, checked.stderr[-3000:]
    assert "All definitions loaded successfully" in checked.stdout + checked.stderr


@pytest.mark.slow  # dg loads the project
def test_dg_check_defs_names_the_broken_key_of_a_project_file(tmp_path: Path) -> None:
    raw = yaml.safe_load((TESTS / "configs" / "small.yaml").read_text())
    raw["adapters"]["math-lora"]["dataset"] = "maths"
    (tmp_path / "factory.yaml").write_text(yaml.safe_dump(raw))
    checked = dg("check", "defs", config=tmp_path / "factory.yaml")
    assert checked.returncode != 0
    assert "adapters.math-lora.dataset: 'maths' is not in datasets (declared: math)" in \
        checked.stdout + checked.stderr


@pytest.mark.slow
def test_dg_launch_materializes_an_asset_of_a_project_file(tmp_path: Path) -> None:
    (tmp_path / "factory.yaml").write_text(yaml.safe_dump({
        "storage": {"object_store": "file://store", "work_dir": "work"},
        "datasets": {"problems": {"sources": [
            {"generator": "math_word_problems", "rows": 50, "seed": 3}]}}}))
    (tmp_path / "home").mkdir()
    launched = dg("launch", "--assets", "dataset/problems", config=tmp_path / "factory.yaml",
                  home=tmp_path / "home")
    assert launched.returncode == 0, launched.stderr[-3000:]
    store = resources_for(load_config(tmp_path / "factory.yaml"))["store"]
    assert sum(store.read_ref("dataset/problems")["counts"].values()) > 0
