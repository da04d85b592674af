"""A project of one dataset, materialized in process, and the version it published."""

from pathlib import Path

import dagster as dg
import yaml

from config.loading import load_config
from pipelines.graph import make_definitions

KEY = dg.AssetKey(["dataset", "chats"])


def project(tmp_path: Path, **dataset: object) -> Path:
    raw = {
        "storage": {"object_store": "file://store", "work_dir": "work"},
        "base_models": {"tiny": {"source": "local"}},
        "datasets": {"chats": {"sources": [{"path": "data"}],
                               "split": {"val": 0.0, "test": 0.3, "seed": 1},
                               "quality": {"min_test": 0}, **dataset}},
        "adapters": {"lora": {"base_model": "tiny", "dataset": "chats"}},
    }
    (tmp_path / "factory.yaml").write_text(yaml.safe_dump(raw))
    return tmp_path / "factory.yaml"


def run(config_path: Path, *keys: dg.AssetKey) -> dg.ExecuteInProcessResult:
    defs = make_definitions(load_config(config_path))
    return defs.resolve_job_def("everything").execute_in_process(
        instance=dg.DagsterInstance.ephemeral(), asset_selection=list(keys or [KEY]),
        raise_on_error=False)


def version(result: dg.ExecuteInProcessResult) -> str:
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key == KEY]
    return event.materialization.metadata["version"].value  # type: ignore[return-value]
