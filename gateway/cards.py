"""Model cards for the playground: the README.md of each adapter's current champion, read from
the object store the factory publishes to (a folder or S3), never from a replica."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from config.gateway import GatewaySettings
from resources.paths import contained
from worker.s3 import split_url

CARD = "README.md"


class ModelCards:
    def __init__(self, settings: GatewaySettings) -> None:
        self.url = settings.object_store
        self.endpoint_url = settings.s3_endpoint_url
        self._client: Any = None

    def _read(self, key: str) -> bytes | None:
        if self.url.startswith("file://"):
            path = contained(Path(self.url.removeprefix("file://")), key, "model card key")
            return path.read_bytes() if path.is_file() else None
        import boto3

        if self._client is None:
            self._client = boto3.client("s3", endpoint_url=self.endpoint_url)
        bucket, prefix = split_url(self.url)
        try:
            obj = self._client.get_object(Bucket=bucket, Key=f"{prefix.strip('/')}/{key}")
        except self._client.exceptions.NoSuchKey:
            return None
        return obj["Body"].read()

    def card(self, model: str) -> str | None:
        """The champion's card of adapter `model`; None when it has no champion or no card."""
        registry = self._read(f"registry/{model}.json")
        champion = json.loads(registry).get("champion") if registry else None
        if not champion:
            return None
        text = self._read(f"{champion['prefix'].strip('/')}/{CARD}")
        return text.decode() if text is not None else None
