"""A test project (a file of tests/configs/) materialized whole in a temporary folder, its vLLM
servers stopped afterwards: one way for every fixture that needs a graph built."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

from config.loading import load_config
from config.schema import FactoryConfig

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent


def materialized(config_name: str, root: Path, folders: dict[str, Path] | None = None
                 ) -> Iterator[tuple[FactoryConfig, object]]:
    """tests/configs/<config_name> as `root`/factory.yaml with `folders` copied beside it (name
    in the project: folder), materialized in process; yields (config, the run's result)."""
    from pipelines.cli import materialize
    from pipelines.graph import resources_for

    shutil.copy(TESTS / "configs" / config_name, root / "factory.yaml")
    for name, folder in (folders or {}).items():
        shutil.copytree(folder, root / name)
    config = load_config(root / "factory.yaml")
    result = materialize(config)
    try:
        yield config, result
    finally:
        vllm = resources_for(config)["vllm"]
        for name in config.deployments:
            for server in vllm.servers_of(name):
                vllm.stop(server)
