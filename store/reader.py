"""Reading published artifacts without the control plane: for the programs that only read the
object store (a vLLM replica's LoRA resolver, the gateway's model cards), on a `file://` folder
or an `s3://` prefix, with a download that verifies every file against the folder's
`_MANIFEST.json` before anyone reads it.

Writing stays with the control plane (resources/object_store.py over store/backends.py): this
side never writes there.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from store.keys import MANIFEST
from store.paths import contained
from store.s3 import split_url


class Unverified(ValueError):
    """A published folder whose files do not match its manifest: never handed to a reader."""


class ArtifactReader:
    def __init__(self, url: str, endpoint_url: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.endpoint_url = endpoint_url
        self._client: Any = None

    def _s3(self) -> tuple[Any, str, str]:
        import boto3

        if self._client is None:
            self._client = boto3.client("s3", endpoint_url=self.endpoint_url)
        bucket, prefix = split_url(self.url)
        return self._client, bucket, prefix.strip("/")

    def read(self, key: str) -> bytes | None:
        """The object's bytes; None when there is no such object."""
        if self.url.startswith("file://"):
            path = contained(Path(self.url.removeprefix("file://")), key, "object key")
            return path.read_bytes() if path.is_file() else None
        client, bucket, prefix = self._s3()
        try:
            return client.get_object(Bucket=bucket, Key=f"{prefix}/{key}".lstrip("/"))[
                "Body"].read()
        except client.exceptions.NoSuchKey:
            return None

    def read_json(self, key: str) -> Any:
        data = self.read(key)
        return None if data is None else json.loads(data)

    def list(self, prefix: str) -> list[str]:
        """Keys of the objects directly under `prefix/` (one level), sorted."""
        prefix = prefix.strip("/")
        if self.url.startswith("file://"):
            folder = contained(Path(self.url.removeprefix("file://")), prefix, "object key")
            return sorted(f"{prefix}/{p.name}" for p in folder.glob("*") if p.is_file()) \
                if folder.is_dir() else []
        client, bucket, root = self._s3()
        start = f"{root}/{prefix}/".lstrip("/")
        keys = [obj["Key"].removeprefix(f"{root}/".lstrip("/"))
                for page in client.get_paginator("list_objects_v2").paginate(
                    Bucket=bucket, Prefix=start, Delimiter="/")
                for obj in page.get("Contents", [])]
        return sorted(keys)

    def fetch_verified(self, prefix: str, dest: Path) -> dict[str, Any]:
        """Download the folder at `prefix` into `dest` (unless a verified copy is there) and
        return its manifest; raises Unverified naming the file that does not match, leaving
        nothing at `dest`."""
        prefix = prefix.strip("/")
        manifest = self.read_json(f"{prefix}/{MANIFEST}")
        if manifest is None:
            raise Unverified(f"{self.url}/{prefix} has no {MANIFEST}: not a published artifact")
        if (dest / MANIFEST).is_file() and json.loads((dest / MANIFEST).read_text()) == manifest:
            return manifest
        staging = dest.with_name(f"{dest.name}.partial-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        try:
            for rel, meta in manifest["files"].items():
                target = contained(staging, rel, f"{prefix}/{MANIFEST}: file name")
                target.parent.mkdir(parents=True, exist_ok=True)
                data = self.read(f"{prefix}/{rel}")
                if data is None:
                    raise Unverified(f"{prefix}/{rel} is listed in {MANIFEST} but missing")
                digest = hashlib.sha256(data).hexdigest()
                if digest != meta["sha256"]:
                    raise Unverified(f"{prefix}/{rel}: sha256 {digest[:16]}... does not match "
                                     f"the manifest's {meta['sha256'][:16]}...; the file changed "
                                     "after it was published")
                target.write_bytes(data)
            (staging / MANIFEST).write_text(json.dumps(manifest))
            shutil.rmtree(dest, ignore_errors=True)
            dest.parent.mkdir(parents=True, exist_ok=True)
            staging.rename(dest)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return manifest
