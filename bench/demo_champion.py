"""What the serving benchmarks start from: the demo's deployment and its promoted adapter (run
`make demo` first), and a scratch store where those weights are promoted under other names or
versions, so a replica's resolver has adapters to pull while the project's registry is left
alone."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from config.deployments import DeploymentSpec
from config.loading import load_config
from pipelines.graph import resources_for
from resources.object_store import ObjectStore
from resources.vllm_replica import LoraStore
from resources.vllm_server import VLLMServer
from store.registry import Registry


@dataclass
class DemoChampion:
    store: ObjectStore
    vllm: VLLMServer
    deployment: DeploymentSpec
    adapter: str
    champion: dict[str, Any]
    rank: int
    base: dict[str, Any]  # the base model's ref

    @property
    def weights(self) -> Path:
        return self.store.local_dir(self.champion["prefix"])


def demo_champion(config_path: str) -> DemoChampion:
    config = load_config(config_path)
    res = resources_for(config)
    store = res["store"]
    deployment = next(iter(config.deployments.values()))
    adapter = deployment.adapters[0]
    champion = Registry(store).champion(adapter)
    if champion is None:
        raise SystemExit(f"no promoted {adapter}; run `make demo` first")
    return DemoChampion(
        store=store, vllm=res["vllm"], deployment=deployment, adapter=adapter,
        champion=champion, rank=store.get_json(f"{champion['prefix']}/adapter_config.json")["r"],
        base=store.read_ref(f"base_model/{deployment.base_model}"))


class ScratchRegistry:
    """A temporary store in which the champion's weights are published and promoted."""

    def __init__(self, demo: DemoChampion, folder: Path) -> None:
        self.demo, self.folder = demo, folder
        self.store = ObjectStore(url=f"file://{folder}")
        self.trained_on = demo.store.manifest(demo.champion["prefix"])["base_model"]

    @property
    def lora_store(self) -> LoraStore:
        return LoraStore(self.store.absolute_url)

    def promote(self, name: str, version: str) -> None:
        prefix = f"adapter/{name}/{version}"
        self.store.put_dir(prefix, self.demo.weights, base_model=self.trained_on)
        Registry(self.store).promote(name, version, prefix, why="bench", scores={})


@contextmanager
def scratch_registry(demo: DemoChampion) -> Iterator[ScratchRegistry]:
    folder = Path(tempfile.mkdtemp(prefix="bench-store-"))
    try:
        yield ScratchRegistry(demo, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
