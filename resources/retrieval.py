"""Chroma collections as LlamaIndex indexes: opened, and searched with top-k or MMR.

Shared by the index asset (which builds collections) and the gateway (which answers RAG requests),
so both embed queries with the model recorded on the collection when it was built. Dagster-free.
"""

from __future__ import annotations

import os
import threading
import uuid
from pathlib import Path
from typing import Any

from resources.embeddings import llama_index_embedding

EMBEDDING_KEY = "embedding_model"
# Chroma's embedded mode keeps a collection's vector index in the memory of each process that
# opened it and does not see another process's writes: after a re-index run, a reader such as
# the gateway kept returning deleted chunks (without their metadata) and missed added ones.
# Writers stamp the folder after every change; an embedded client is reopened when it changed.
WRITTEN = "factory-written"
EMBEDDED = threading.RLock()  # held while a reopen could stop a system another thread queries
_opened: dict[str, str] = {}


def chroma_server(url: str) -> tuple[str, int]:
    """Host and port of a Chroma server's `http://host:port` (Chroma's 8000 when left out)."""
    from urllib.parse import urlparse

    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(f"chroma_url must be http://host:port, got {url!r}")
    return parsed.hostname, parsed.port or 8000


def chroma_client(path: str | Path | None = None, host: str | None = None, port: int = 8000
                  ) -> Any:
    """The HTTP client when a host is given (a Chroma server), else the embedded one."""
    import chromadb
    from chromadb.config import Settings

    settings = Settings(anonymized_telemetry=False)
    if host:
        return chromadb.HttpClient(host=host, port=port, settings=settings)
    from chromadb.api.client import SharedSystemClient

    stamp = Path(str(path), WRITTEN)
    written = stamp.read_text() if stamp.is_file() else ""
    with EMBEDDED:
        if _opened.get(str(path), written) != written:
            SharedSystemClient.clear_system_cache()  # the next client reads the folder afresh
        _opened[str(path)] = written
        return chromadb.PersistentClient(path=str(path), settings=settings)


def mark_written(path: str | Path) -> None:
    """After changing an embedded store: every process reopens it before its next query."""
    partial = Path(path, f"{WRITTEN}.partial")
    partial.write_text(uuid.uuid4().hex)
    os.replace(partial, Path(path, WRITTEN))


def collection(client: Any, name: str, built_with: dict[str, Any]) -> Any:
    """The collection `name`, created with `built_with` (the embedding model under
    EMBEDDING_KEY, the chunking) recorded in its metadata when it does not exist."""
    return client.get_or_create_collection(name, metadata={"hnsw:space": "cosine", **built_with})


def changed_settings(client: Any, name: str, built_with: dict[str, Any]) -> list[str]:
    """How the existing collection `name` was built differently from `built_with`, one line per
    setting (none when it does not exist yet)."""
    from chromadb.errors import NotFoundError

    try:
        recorded = client.get_collection(name).metadata or {}
    except NotFoundError:
        return []
    return [f"{key} {recorded[key]!r} -> {value!r}" if key in recorded
            else f"{key} (not recorded) -> {value!r}"
            for key, value in built_with.items() if recorded.get(key) != value]


def open_index(client: Any, name: str) -> Any:
    """An existing collection; raises chromadb's NotFoundError when there is none."""
    from llama_index.core import VectorStoreIndex
    from llama_index.vector_stores.chroma import ChromaVectorStore

    found = client.get_collection(name)
    model = (found.metadata or {}).get(EMBEDDING_KEY, "bundled:all-MiniLM-L6-v2")
    return VectorStoreIndex.from_vector_store(ChromaVectorStore(chroma_collection=found),
                                              embed_model=llama_index_embedding(model))


def retrieve(index: Any, question: str, top_k: int, mmr: float | None = None
             ) -> list[dict[str, Any]]:
    """Top-k chunks with source document, chunk id, position and score.

    With `mmr` (0..1, LlamaIndex's mmr_threshold: 1 = pure relevance, lower = more diverse) the
    chunks are re-ranked by maximal marginal relevance.
    """
    kwargs: dict[str, Any] = {"similarity_top_k": top_k}
    if mmr is not None:
        kwargs |= {"vector_store_query_mode": "mmr", "vector_store_kwargs": {"mmr_threshold": mmr}}
    nodes = index.as_retriever(**kwargs).retrieve(question)
    return [{"source": n.node.metadata.get("source"), "chunk_id": n.node.node_id,
             "start": n.node.start_char_idx, "end": n.node.end_char_idx,
             "score": None if n.score is None else round(float(n.score), 4),
             "text": n.node.get_content()}
            for n in nodes]
