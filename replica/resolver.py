"""A vLLM LoRA resolver for the factory's object store.

vLLM asks its resolvers for an adapter a request names that the server has not loaded. This one
serves `<adapter>` as the registry's current champion and `<adapter>@<version>` as that version
if it was ever promoted (a mixture, built from champions: its current version). It downloads
the version from `file://` or `s3://` into a local cache, checks every file against the
version's `_MANIFEST.json` (sha256) and the base model it was trained on before vLLM reads a
byte, and hands vLLM the folder. Anything else (no such adapter,
never promoted, a file changed after publishing, another base model) is refused: vLLM answers
404 and this log says why. A replica started at any time thus serves every champion without
anyone copying files to it.

Registered through the `vllm.general_plugins` entry point (pyproject.toml) when
FACTORY_LORA_STORE is set; FACTORY_LORA_CACHE is the download folder, FACTORY_BASE_MODEL the
`name@version` of the served base (unset: not checked), AWS_ENDPOINT_URL_S3 an S3-compatible
endpoint.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from vllm.logger import init_logger
from vllm.lora.request import LoRARequest
from vllm.lora.resolver import LoRAResolver, LoRAResolverRegistry

from store.keys import ref_key, registry_key
from store.paths import contained
from store.reader import ArtifactReader, Unverified
from store.registry import SERVED_NAME, champion_of, promotion_of

logger = init_logger(__name__)


class Refused(ValueError):
    """An adapter this replica will not serve, and why."""


class StoreResolver(LoRAResolver):
    def __init__(self, reader: ArtifactReader, cache: Path, base_model: str | None) -> None:
        self.reader, self.cache, self.base_model = reader, cache, base_model

    def locate(self, lora_name: str) -> tuple[str, str, str]:
        """(adapter, version, prefix) of what `lora_name` asks for, if it may be served."""
        match = SERVED_NAME.match(lora_name)
        if match is None:
            raise Refused("not an adapter name (`<adapter>` or `<adapter>@<version>`)")
        name, version = match["name"], match["version"]
        registry = self.reader.read_json(registry_key(name))
        if registry is None:
            mixture = self.reader.read_json(ref_key("mixture", name))
            if mixture is None:
                raise Refused(f"no adapter '{name}' in the registry of {self.reader.url}, "
                              "and no such mixture")
            if version not in (None, mixture["version"]):
                raise Refused(f"version {version} of mixture '{name}' is not its current one")
            return name, mixture["version"], mixture["prefix"]
        if version is None:
            champion = champion_of(registry)
            if not champion:
                raise Refused(f"'{name}' has no champion: none of its versions was promoted")
            return name, champion["version"], champion["prefix"]
        promoted = promotion_of(registry, version)
        if promoted is None:
            raise Refused(f"version {version} of '{name}' was never promoted")
        return name, version, promoted["prefix"]

    def fetch(self, lora_name: str) -> Path:
        """The verified local folder of the adapter `lora_name` names."""
        name, version, prefix = self.locate(lora_name)
        folder = contained(self.cache, f"{name}/{version}", "adapter cache folder")
        manifest = self.reader.fetch_verified(prefix, folder)
        trained_on = manifest.get("base_model")
        if self.base_model and trained_on != self.base_model:
            raise Refused(f"{name}@{version} was trained on {trained_on}, this replica serves "
                          f"{self.base_model}")
        return folder

    async def resolve_lora(self, base_model_name: str, lora_name: str) -> LoRARequest | None:
        try:
            folder = await asyncio.to_thread(self.fetch, lora_name)
        except (Refused, Unverified) as exc:
            logger.error("refusing LoRA adapter %r: %s", lora_name, exc)
            return None
        logger.info("resolved LoRA adapter %r from %s", lora_name, folder)
        # vLLM replaces the id with its own counter before loading
        return LoRARequest(lora_name=lora_name, lora_int_id=1, lora_path=str(folder))


def register() -> None:
    """vLLM's plugin hook: active only where the deployment configured a store."""
    url = os.environ.get("FACTORY_LORA_STORE")
    if not url:
        return
    cache = Path(os.environ.get("FACTORY_LORA_CACHE") or Path.home() / ".cache" / "factory-loras")
    reader = ArtifactReader(url, os.environ.get("AWS_ENDPOINT_URL_S3"))
    LoRAResolverRegistry.register_resolver(
        "Adapter Factory object store",
        StoreResolver(reader, cache, os.environ.get("FACTORY_BASE_MODEL") or None))
