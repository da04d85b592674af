"""Model cards for the playground: the README.md of each adapter's current champion, read from
the object store the factory publishes to (a folder or S3), never from a replica."""

from __future__ import annotations

from config.gateway import GatewaySettings
from store.keys import CARD, registry_key, speech_card_key
from store.reader import ArtifactReader
from store.registry import champion_of


class ModelCards:
    def __init__(self, settings: GatewaySettings) -> None:
        self.store = ArtifactReader(settings.object_store, settings.s3_endpoint_url)

    def card(self, model: str) -> str | None:
        """The champion's card of adapter `model`, or a speech model's card; None when it has
        neither."""
        champion = champion_of(self.store.read_json(registry_key(model)))
        key = f"{champion['prefix'].strip('/')}/{CARD}" if champion else speech_card_key(model)
        text = self.store.read(key)
        return text.decode() if text is not None else None
