"""A project's documents in the collections it was granted: uploaded into the corpus's folder
under a name the server chooses, deleted by owners, and re-indexed by the corpus and index assets
(their incremental runs: only what changed is embedded again).

Only collections whose corpus reads a folder and that no other project was granted take uploads
(retrieval does not filter by project: a shared collection would let one project plant text in
another's answers); a collection fed from S3, generated or shared is read-only here.
Documents are plain text (.txt, .md, .html): a format that is an archive
inside (docx) or a program of its own (PDF) is not taken from tenants.
"""

from __future__ import annotations

import os
import re
import shutil
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from config.corpora import CorpusSpec
from config.datasets import FileSource
from config.schema import FactoryConfig
from gateway.protocol import GatewayError
from gateway.studio import uploads
from gateway.studio.dagster import KIND_TAG, SUBJECT_TAG
from gateway.studio.roles import not_found, require
from gateway.tenancy import Principal
from store.backends import ArtifactMissing

TEXT_SUFFIXES = (".txt", ".md", ".markdown", ".html", ".htm")
DOCUMENT_ID = re.compile(r"[0-9a-f]{32}")
QUEUED = {"QUEUED", "NOT_STARTED"}


def collection_not_found(name: str) -> GatewayError:
    return GatewayError(404, f"The collection '{name[:64]}' does not exist or you do not have "
                             "access to it.", "invalid_request_error", "not_found")


def safe_stem(label: str) -> str:
    """The file name's stem as a path component: letters, digits, '.', '-', '_' only."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(label).stem).strip(".-")[:60]
    return stem or "document"


class Documents:
    def __init__(self, studio: Any) -> None:
        self.studio = studio

    def _meta_prefix(self, principal: Principal) -> str:
        return f"studio/documents/{principal.project_id}"

    def collections(self, principal: Principal) -> list[dict[str, Any]]:
        _, config = self.studio.platform()
        granted = self.studio.tenancy.granted(principal.project_id, "collection")
        mine = self.list(principal)
        return [{"id": name, "uploads": isinstance(spec.source, FileSource)
                 and self.studio.tenancy.grantees(name, "collection") == 1
                 and not config.datasets_reading(name),
                 "documents": sum(d["collection"] == name for d in mine)}
                for name, spec in sorted(config.corpora.items()) if name in granted]

    def corpus(self, principal: Principal, name: str) -> tuple[FactoryConfig, CorpusSpec]:
        _, config = self.studio.platform()
        spec = config.corpora.get(name)
        if spec is None or name not in self.studio.tenancy.granted(principal.project_id,
                                                                   "collection"):
            raise collection_not_found(name)
        return config, spec

    def list(self, principal: Principal, collection: str | None = None) -> list[dict[str, Any]]:
        store = self.studio.store
        docs = [d for k in store.list(f"{self._meta_prefix(principal)}/")
                if (d := self.studio.read_if_there(k)) is not None]
        return sorted((d for d in docs if collection in (None, d["collection"])),
                      key=lambda d: -d["created_at"])

    def with_chunks(self, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        counts = self.studio.chunk_counts({d["collection"] for d in docs})
        return [{**d, "chunks": counts.get((d["collection"], d["source"]), 0)} for d in docs]

    async def upload(self, principal: Principal, collection: str, label: str,
                     chunks: AsyncIterator[bytes]) -> dict[str, Any]:
        require(principal, "member", "upload documents")
        config, spec = self.corpus(principal, collection)
        if not isinstance(spec.source, FileSource):
            raise GatewayError(409, f"The collection '{collection}' is read from "
                                    f"{'S3' if hasattr(spec.source, 's3') else 'a generator'}; "
                                    "documents cannot be uploaded to it here.",
                               "invalid_request_error", "read_only_collection")
        if config.datasets_reading(collection):  # they would train every project's adapters
            raise GatewayError(409, f"The collection '{collection}' is training data of the "
                                    "platform's adapters; documents are added to it by the "
                                    "platform, not from one project's Studio.",
                               "invalid_request_error", "read_only_collection")
        if self.studio.tenancy.grantees(collection, "collection") > 1:
            raise GatewayError(409, f"The collection '{collection}' is shared with other "
                                    "projects; documents are added to it by the platform, not "
                                    "from one project's Studio.", "invalid_request_error",
                               "read_only_collection")
        suffix = Path(label).suffix.lower()
        if suffix not in TEXT_SUFFIXES:
            raise uploads.bad_upload(f"'{label}' is not a document this Studio takes: use "
                                     f"{', '.join(TEXT_SUFFIXES)}.", "unsupported_file_type",
                                     "filename")
        if len(self.list(principal)) >= self.studio.bounds.max_documents:
            raise GatewayError(403, "This project has uploaded its limit of documents; delete "
                                    "one first.", "permission_error", "quota_exceeded")
        folder = config.resolve(spec.source.path)
        if not folder.is_dir():
            raise GatewayError(409, f"The collection '{collection}' reads a single file, not a "
                                    "folder; documents cannot be added to it.",
                               "invalid_request_error", "read_only_collection")
        self.studio.scratch.mkdir(parents=True, exist_ok=True)
        path = await uploads.receive(chunks, self.studio.bounds.max_document_bytes,
                                     self.studio.scratch, suffix)
        try:
            _check_text(path, label)
            doc_id = uuid.uuid4().hex
            target = folder / f"studio-{principal.project_id}" / \
                f"{doc_id[:8]}-{safe_stem(label)}{suffix}"
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(f".{target.name}.partial")  # hidden: corpora skip it
            shutil.copyfile(path, partial)  # the scratch folder may be another file system
            os.replace(partial, target)  # whole or absent, never half-written
        finally:
            path.unlink(missing_ok=True)
        meta = {"id": doc_id, "collection": collection, "label": label,
                "source": str(target.relative_to(config.root)) if target.is_relative_to(
                    config.root) else str(target),
                "path": str(target), "bytes": target.stat().st_size,
                "created_by": principal.user, "created_at": time.time()}
        self.studio.store.put_json(f"{self._meta_prefix(principal)}/{doc_id}.json", meta)
        meta["run_id"] = await self.reindex(principal, collection)
        return {k: v for k, v in meta.items() if k != "path"}

    async def delete(self, principal: Principal, collection: str, doc_id: str
                     ) -> dict[str, Any]:
        require(principal, "owner", "delete documents")
        self.corpus(principal, collection)
        key = f"{self._meta_prefix(principal)}/{doc_id}.json"
        try:
            meta = self.studio.store.get_json(key) if DOCUMENT_ID.fullmatch(doc_id) else None
        except ArtifactMissing:
            meta = None
        if meta is None or meta["collection"] != collection:
            raise not_found("document")
        Path(meta["path"]).unlink(missing_ok=True)
        self.studio.store.backend.delete(key)
        return {"id": doc_id, "deleted": True,
                "run_id": await self.reindex(principal, collection)}

    async def reindex(self, principal: Principal, collection: str) -> str | None:
        """A run of the corpus and its index, unless this project's last one has not started
        yet (it will read the folder as it is then): uploads in a row make one run."""
        for run in await self.studio.dagster.runs(principal.project):
            if run.tags.get(KIND_TAG) == "reindex" and run.tags.get(
                    SUBJECT_TAG) == collection and run.status in QUEUED:
                return run.run_id
        return await self.studio.launch_run(principal, [["corpus", collection],
                                                        ["index", collection]],
                                            "reindex", collection)


def _check_text(path: Path, label: str) -> None:
    raw = path.read_bytes()
    if b"\x00" in raw or raw.startswith(tuple(uploads.FOREIGN_MAGIC)):
        raise uploads.bad_upload(f"'{label}' is not text.", "content_does_not_match_type",
                                 "file")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise uploads.bad_upload(f"'{label}' is not UTF-8 text (byte {exc.start}).",
                                 "content_does_not_match_type", "file") from exc

