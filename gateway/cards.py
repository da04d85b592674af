"""Model cards for the playground: the README.md of each adapter's current champion, read from
the object store the factory publishes to (a folder or S3), never from a replica."""

from __future__ import annotations

from config.gateway import GatewaySettings
from worker.artifacts import CARD, ArtifactReader


class ModelCards:
    def __init__(self, settings: GatewaySettings) -> None:
        self.store = ArtifactReader(settings.object_store, settings.s3_endpoint_url)

    def card(self, model: str) -> str | None:
        """The champion's card of adapter `model`; None when it has no champion or no card."""
        registry = self.store.read_json(f"registry/{model}.json")
        champion = registry.get("champion") if registry else None
        if not champion:
            return None
        text = self.store.read(f"{champion['prefix'].strip('/')}/{CARD}")
        return text.decode() if text is not None else None
