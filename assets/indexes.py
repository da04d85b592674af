"""Chroma indexes of corpora, built through a LlamaIndex ingestion pipeline with a docstore.

The docstore records each document's content hash (document id = source path or s3:// URL), so a
re-index embeds only added and changed documents and deletes removed ones from the collection
(upserts-and-delete strategy); an unchanged corpus embeds nothing. Every run then sweeps chunks
of any document the corpus no longer has (a docstore lost or older than the collection), so the
collection always converges to its source: what a user deletes is never retrieved again.

The docstore's hashes see only the documents: every chunk also depends on the chunking and the
embedding model, which the collection records when it is created. When they change, the
collection and the docstore are dropped and every chunk is rebuilt, and the index's data version
(the corpus version plus these settings) changes with them.

Retrieval quality (hit@k over the corpus's questions) is the `retrieval_quality` check, a
warning by default: it reports, never prevents, the index following its source.
"""


import json
import os
import time
from pathlib import Path
from typing import Any

import dagster as dg

from assets.common import WITH_ITS_ASSET, Definition, current, store_link, version_of
from config.corpora import CorpusSpec
from config.schema import FactoryConfig
from ingest import published_corpus
from resources.embeddings import llama_index_embedding
from resources.object_store import ObjectStore
from resources.retrieval import (
    EMBEDDING_KEY,
    changed_settings,
    collection,
    open_index,
    retrieve,
)
from resources.vector_store import ChromaResource


def load_documents(root: Path) -> list[Any]:
    from llama_index.core import Document

    # the source path is kept for citations but not embedded: vectors describe the content
    return [Document(text=text, doc_id=d["doc_id"], metadata={"source": d["doc_id"]},
                     excluded_embed_metadata_keys=["source"])
            for d, text in published_corpus.documents(root)]


def plan(documents: list[Any], stored: dict[str, str]) -> dict[str, int]:
    """What the pipeline is about to do, from the docstore's {doc_id: hash}."""
    ids = {d.doc_id for d in documents}
    added = sum(d.doc_id not in stored for d in documents)
    updated = sum(d.doc_id in stored and stored[d.doc_id] != d.hash for d in documents)
    return {"added": added, "updated": updated, "deleted": len(set(stored) - ids),
            "unchanged": len(documents) - added - updated}


def hit_rate(index: Any, questions: list[dict[str, str]], top_k: int) -> float:
    hits = sum(q["source"] in {r["source"] for r in retrieve(index, q["question"], top_k)}
               for q in questions)
    return hits / len(questions)


def sweep_removed(chunks: Any, doc_ids: set[str]) -> tuple[int, int]:
    """Delete every chunk whose document is not in `doc_ids`. Returns (chunks deleted,
    documents left in the collection)."""
    stored = chunks.get(include=["metadatas"])
    owners = [(m or {}).get("document_id") for m in stored["metadatas"]]
    stale = [chunk for chunk, owner in zip(stored["ids"], owners, strict=True)
             if owner not in doc_ids]
    if stale:
        chunks.delete(ids=stale)
    return len(stale), len(set(owners) & doc_ids)


def built_with(spec: CorpusSpec) -> dict[str, Any]:
    """What every chunk depends on besides its document's text."""
    return {EMBEDDING_KEY: spec.embedding_model, "chunk_size": spec.chunk_size,
            "chunk_overlap": spec.chunk_overlap}


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def index_asset(name: str, spec: CorpusSpec, config: FactoryConfig) -> list[Definition]:
    key = dg.AssetKey(["index", name])

    @dg.asset(key=key, group_name="rag", kinds={"chroma", "llamaindex"},
              deps=[dg.AssetKey(["corpus", name])],
              description=f"Chroma collection '{name}': chunked, embedded corpus documents.")
    def _index(context: dg.AssetExecutionContext, store: ObjectStore,
               chroma: ChromaResource) -> dg.MaterializeResult:
        from llama_index.core.ingestion import DocstoreStrategy, IngestionPipeline
        from llama_index.core.node_parser import SentenceSplitter
        from llama_index.core.storage.docstore import SimpleDocumentStore
        from llama_index.vector_stores.chroma import ChromaVectorStore

        started = time.monotonic()
        corpus = current(store, "corpus", name)
        root = store.local_dir(corpus["prefix"])
        documents = load_documents(root)
        client = chroma.client()
        docstore_path = config.work_dir / "indexes" / name / "docstore.json"
        settings = built_with(spec)
        rebuilt = changed_settings(client, name, settings)
        if rebuilt:
            context.log.warning(f"index {name}: {', '.join(rebuilt)}: every chunk is rebuilt")
            client.delete_collection(name)
            docstore_path.unlink(missing_ok=True)
        chunks = collection(client, name, settings)
        docstore = SimpleDocumentStore()
        if docstore_path.exists() and chunks.count() > 0:
            docstore = SimpleDocumentStore.from_persist_path(str(docstore_path))
        elif docstore_path.exists():
            context.log.warning(f"collection {name} is empty but a docstore exists: the Chroma "
                                "data was reset, so every document is embedded again")
        stored = {doc_id: h for h, doc_id in docstore.get_all_document_hashes().items()}
        counts = plan(documents, stored)
        context.log.info(f"index {name}: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
        pipeline = IngestionPipeline(
            transformations=[
                SentenceSplitter(chunk_size=spec.chunk_size, chunk_overlap=spec.chunk_overlap),
                llama_index_embedding(spec.embedding_model),
            ],
            vector_store=ChromaVectorStore(chroma_collection=chunks),
            docstore=docstore,
            docstore_strategy=DocstoreStrategy.UPSERTS_AND_DELETE,
        )
        embedded = pipeline.run(documents=documents, show_progress=len(documents) > 20)
        docstore_path.parent.mkdir(parents=True, exist_ok=True)
        partial = docstore_path.with_suffix(".partial")
        docstore.persist(str(partial))
        os.replace(partial, docstore_path)  # a reader never sees a half-written docstore
        index_seconds = time.monotonic() - started

        swept, indexed = sweep_removed(chunks, {d.doc_id for d in documents})
        if embedded or counts["deleted"] or swept:  # readers elsewhere reopen only on a change
            chroma.mark_written()
        if swept:
            context.log.warning(f"index {name}: {swept} chunk(s) of documents the corpus no "
                                "longer has were still in the collection; deleted")
        context.log.info(f"index {name}: {len(embedded)} chunks embedded in "
                         f"{index_seconds:.1f}s, {swept} stale chunks swept")
        return dg.MaterializeResult(
            metadata={
                **{f"documents_{k}": v for k, v in counts.items()},
                "documents": len(documents),
                "documents_in_collection": indexed,
                "chunks_embedded_this_run": len(embedded),
                "chunks_in_collection": chunks.count(),
                "stale_chunks_swept": swept,
                "chunks_per_second": round(len(embedded) / index_seconds, 1),
                "index_seconds": round(index_seconds, 2),
                "chroma": chroma.location,
                "corpus_version": corpus["version"],
                "corpus": store_link(store, corpus["prefix"]),
                **settings,
                "rebuilt_because": "; ".join(rebuilt) or "nothing changed",
            },
            data_version=dg.DataVersion(f"{corpus['version']}-{version_of(settings)}"),
        )

    @dg.asset_check(
        asset=key, name="retrieval_quality", blocking=spec.retrieval_check.blocking,
        description=f"hit@{spec.top_k} over the corpus's questions reaches "
                    f"{spec.retrieval_check.min_hit_rate:g}, and every question names a document "
                    "the corpus has (" + ("blocking" if spec.retrieval_check.blocking
                                          else "a warning") + ")",
        automation_condition=WITH_ITS_ASSET)
    def _retrieval(store: ObjectStore, chroma: ChromaResource) -> dg.AssetCheckResult:
        root = store.local_dir(current(store, "corpus", name)["prefix"])
        questions = read_jsonl(root / "questions.jsonl")
        findings = read_jsonl(root / "question_findings.jsonl")
        severity = (dg.AssetCheckSeverity.ERROR if spec.retrieval_check.blocking
                    else dg.AssetCheckSeverity.WARN)
        metadata: dict[str, Any] = {"questions": len(questions), "findings": len(findings),
                                    "min_hit_rate": spec.retrieval_check.min_hit_rate}
        if findings:
            metadata["question_findings"] = dg.MetadataValue.json(findings[:50])
        if not questions:
            return dg.AssetCheckResult(
                passed=not findings, severity=severity, metadata=metadata,
                description="no questions to score" + (
                    f"; {len(findings)} line(s) of the questions file cannot be scored"
                    if findings else ""))
        index = open_index(chroma.client(), name)
        rate = hit_rate(index, questions, spec.top_k)
        sample = retrieve(index, questions[0]["question"], 3)
        metadata |= {f"hit_at_{spec.top_k}": rate, "sample_query": dg.MetadataValue.json({
            "question": questions[0]["question"],
            "results": [{k: r[k] for k in ("source", "chunk_id", "score")} for r in sample]})}
        problems = []
        if rate < spec.retrieval_check.min_hit_rate:
            problems.append(f"hit@{spec.top_k} {rate:.2f} < {spec.retrieval_check.min_hit_rate:g}")
        if findings:
            missing = [f["source"] for f in findings if f["finding"] == "missing_document"]
            problems.append(f"{len(findings)} question(s) cannot be scored" + (
                f" ({len(missing)} name documents the corpus no longer has: "
                f"{', '.join(repr(m) for m in missing[:3])})" if missing else ""))
        return dg.AssetCheckResult(passed=not problems, severity=severity, metadata=metadata,
                                   description="; ".join(problems) or None)

    return [_index, _retrieval]
