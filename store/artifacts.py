"""Where artifacts live: a local directory by default, S3 (or S3-compatible) in production.

Artifacts are folders (a model, an adapter, a dataset version). A folder counts as complete only
once its `_MANIFEST.json` exists, and the manifest is written last, after every file it lists; a
crash mid-upload leaves files without a manifest, which readers treat as absent. Single objects
are written atomically (temp file + rename locally; S3 PUTs are atomic by themselves).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, PrivateAttr

from store.backends import ArtifactMissing, Backend, LocalBackend, S3Backend, sha256_of
from store.keys import CARD, MANIFEST, ref_key
from store.paths import contained
from store.s3 import split_url


class ArtifactStore(BaseModel):
    """Artifact storage shared by every asset, the gateway, the training worker and the serving
    side; Dagster-free (the control plane's resource, `resources.object_store.ObjectStore`, is this
    class as a Dagster resource).

    `url` is `file://<dir>` (relative paths resolve against `root`) or `s3://<bucket>/<prefix>`;
    `endpoint_url` points boto3 at an S3-compatible server. `cache_dir` holds local copies of
    remote folders, keyed by the folder's manifest digest, for engines that need a path.
    """

    url: str
    root: str = "."
    cache_dir: str = ".factory/cache"
    endpoint_url: str | None = None
    _backend: Backend | None = PrivateAttr(default=None)

    # -- construction -------------------------------------------------------------------------
    @property
    def backend(self) -> Backend:
        if self._backend is None:
            if self.url.startswith("file://"):
                path = Path(self.url.removeprefix("file://"))
                self._backend = LocalBackend((Path(self.root) / path).resolve())
            elif self.url.startswith("s3://"):
                import boto3

                bucket, prefix = split_url(self.url)
                client = boto3.client("s3", endpoint_url=self.endpoint_url)
                self._backend = S3Backend(bucket, prefix, client)
            else:
                raise ValueError(f"object store url must be file:// or s3://, got {self.url!r}")
        return self._backend

    @property
    def absolute_url(self) -> str:
        """The store's URL for a process elsewhere (a relative file:// folder made absolute)."""
        backend = self.backend
        return f"file://{backend.root}" if isinstance(backend, LocalBackend) else self.url

    # -- single objects -----------------------------------------------------------------------
    def put_json(self, key: str, payload: Any) -> None:
        self.backend.put_bytes(key, json.dumps(payload, indent=2, sort_keys=True).encode())

    def get_json(self, key: str) -> Any:
        return json.loads(self.backend.get_bytes(key))

    def exists(self, key: str) -> bool:
        return key in self.backend.list(key)

    # -- refs: the current version of a named artifact ------------------------------------------
    def write_ref(self, ref: str, payload: dict[str, Any]) -> None:
        """Point `refs/<ref>` (`kind/name`) at a version; written after the version itself is
        complete."""
        self.put_json(ref_key(*ref.split("/", 1)), payload)

    def read_ref(self, ref: str) -> dict[str, Any]:
        try:
            return self.get_json(ref_key(*ref.split("/", 1)))
        except ArtifactMissing as exc:
            raise ArtifactMissing(f"no '{ref}' has been materialized yet in {self.url}") from exc

    def current(self, kind: str, name: str) -> dict[str, Any]:
        """The ref of the latest materialization of an upstream artifact; one never materialized
        says which asset to materialize first, not a missing-file traceback."""
        try:
            return self.read_ref(f"{kind}/{name}")
        except ArtifactMissing as exc:
            raise ArtifactMissing(
                f"{exc}: materialize {kind}/{name} first (`factory materialize --select "
                f"{kind}/{name}`, or select this asset with `factory materialize --select`, "
                "which runs its missing upstream too)") from exc

    # -- folders ------------------------------------------------------------------------------
    def put_dir(self, prefix: str, local_dir: Path, **info: Any) -> dict[str, Any]:
        """Upload every file, then the manifest; returns the manifest."""
        prefix = prefix.strip("/")
        files: dict[str, dict[str, Any]] = {}
        for path in sorted(p for p in local_dir.rglob("*") if p.is_file()):
            rel = path.relative_to(local_dir).as_posix()
            if rel == MANIFEST:
                continue
            files[rel] = {"size": path.stat().st_size, "sha256": sha256_of(path)}
            self.backend.put_file(f"{prefix}/{rel}", path)
        manifest = {"files": files, "created_at": time.time(), **info}
        content = {rel: meta for rel, meta in files.items() if rel != CARD}
        manifest["digest"] = hashlib.sha256(
            json.dumps(content, sort_keys=True).encode()
        ).hexdigest()
        self.put_json(f"{prefix}/{MANIFEST}", manifest)
        return manifest

    def replace_card(self, prefix: str, text: str) -> None:
        """Rewrite a published folder's model card, then its manifest entry (and a cached copy),
        so the card and its checksum always agree for a reader of the manifest."""
        prefix = prefix.strip("/")
        manifest = self.manifest(prefix)
        data = text.encode()
        self.backend.put_bytes(f"{prefix}/{CARD}", data)
        manifest["files"][CARD] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        self.put_json(f"{prefix}/{MANIFEST}", manifest)
        cache = contained(Path(self.root, self.cache_dir), str(manifest["digest"]),
                          f"{prefix}/{MANIFEST}: digest")
        if self.backend.local_path(prefix) is None and (cache / MANIFEST).exists():
            (cache / CARD).write_bytes(data)
            (cache / MANIFEST).write_text(json.dumps(manifest))

    def manifest(self, prefix: str) -> dict[str, Any]:
        try:
            return self.get_json(f"{prefix.strip('/')}/{MANIFEST}")
        except ArtifactMissing as exc:
            raise ArtifactMissing(
                f"{self.url}/{prefix}: no complete artifact here (missing {MANIFEST}); "
                "materialize the asset that produces it"
            ) from exc

    def is_complete(self, prefix: str) -> bool:
        try:
            self.manifest(prefix)
        except ArtifactMissing:
            return False
        return True

    def local_dir(self, prefix: str) -> Path:
        """A local folder holding the complete artifact, for engines that only read paths."""
        prefix = prefix.strip("/")
        manifest = self.manifest(prefix)
        in_place = self.backend.local_path(prefix)
        if in_place is not None:
            return in_place
        cache = contained(Path(self.root, self.cache_dir), str(manifest["digest"]),
                          f"{prefix}/{MANIFEST}: digest")
        if (cache / MANIFEST).exists():
            return cache
        staging = cache.with_name(cache.name + f".partial-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        for rel, meta in manifest["files"].items():
            dest = contained(staging, rel, f"{prefix}/{MANIFEST}: file name")
            dest.parent.mkdir(parents=True, exist_ok=True)
            self.backend.get_file(f"{prefix}/{rel}", dest)
            if sha256_of(dest) != meta["sha256"]:
                raise ArtifactMissing(f"{prefix}/{rel}: checksum mismatch after download")
        (staging / MANIFEST).write_text(json.dumps(manifest))
        shutil.rmtree(cache, ignore_errors=True)
        staging.rename(cache)
        return cache

    def list(self, prefix: str) -> list[str]:
        """Keys under `prefix`; end it with '/' to mean a folder (so 'v1/' excludes 'v10/')."""
        return self.backend.list(prefix.lstrip("/"))

    def delete_prefix(self, prefix: str) -> None:
        """Delete the manifest first: a reader never sees a complete-looking half-deleted folder.
        A local copy of a remote folder goes too (an erasure leaves none behind)."""
        prefix = prefix.strip("/")
        digest = self.manifest(prefix)["digest"] if self.is_complete(prefix) else None
        self.backend.delete(f"{prefix}/{MANIFEST}")
        for key in self.backend.list(f"{prefix}/"):
            self.backend.delete(key)
        if digest and self.backend.local_path(prefix) is None:
            shutil.rmtree(contained(Path(self.root, self.cache_dir), str(digest),
                                    f"{prefix}/{MANIFEST}: digest"), ignore_errors=True)
