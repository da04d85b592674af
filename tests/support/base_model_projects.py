"""A project of one base model from a source (a GGUF, a faster-whisper folder), materialized with
its checks."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from config.loading import load_config
from pipelines.runs import failed_steps, materialize


def project(root: Path, source: str) -> Path:
    (root / "factory.yaml").write_text(yaml.safe_dump({
        "storage": {"object_store": "file://store", "work_dir": "work"},
        "base_models": {"base": {"source": source}}}))
    return root / "factory.yaml"


def run(root: Path, source: str, monkeypatch: pytest.MonkeyPatch) -> tuple[object, list[str]]:
    monkeypatch.setenv("DAGSTER_HOME", str(root / "home"))
    config = load_config(project(root, source))
    result = materialize(config, ["base_model/base"])
    assets, checks = failed_steps(result)
    return config, assets + checks
