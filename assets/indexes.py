"""Document corpora and their Chroma indexes, built through LlamaIndex.

The index keeps a LlamaIndex docstore beside the Chroma collection (upsert strategy): a document
whose text is unchanged is not embedded again.
"""


import json
import shutil
import time
from pathlib import Path
from typing import Any

import dagster as dg

from assets.common import Definition, current, file_digest, publish, store_link
from assets.demo_data import filings
from pipelines.config import CorpusSpec, FactoryConfig
from resources.embeddings import llama_index_embedding
from resources.object_store import ObjectStore
from resources.vector_store import ChromaResource


def corpus_asset(name: str, spec: CorpusSpec, config: FactoryConfig) -> list[Definition]:
    @dg.asset(key=["corpus", name], group_name="rag", kinds={"text"},
              description=f"Documents of corpus '{name}' and its question -> source test set.")
    def _corpus(context: dg.AssetExecutionContext, store: ObjectStore) -> dg.MaterializeResult:
        out = config.work_dir / "runs" / "corpus" / name
        shutil.rmtree(out, ignore_errors=True)
        (out / "docs").mkdir(parents=True)
        docs = filings.generate(spec.source.documents, spec.source.seed)
        questions = []
        for doc in docs:
            (out / "docs" / f"{doc.doc_id}.txt").write_text(doc.text)
            questions += [{"question": q, "source": doc.doc_id} for q in doc.questions]
        (out / "questions.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))
        version = file_digest(*sorted((out / "docs").iterdir()))
        ref = publish(store, "corpus", name, version, out, documents=len(docs))
        return dg.MaterializeResult(
            metadata={"documents": len(docs), "questions": len(questions), "version": version,
                      "location": store_link(store, ref["prefix"])},
            data_version=dg.DataVersion(version),
        )

    return [_corpus]


def open_index(name: str, spec: CorpusSpec, chroma: ChromaResource) -> Any:
    from llama_index.core import VectorStoreIndex
    from llama_index.vector_stores.chroma import ChromaVectorStore

    collection = chroma.client().get_or_create_collection(name, metadata={"hnsw:space": "cosine"})
    store = ChromaVectorStore(chroma_collection=collection)
    return VectorStoreIndex.from_vector_store(store, embed_model=llama_index_embedding(
        spec.embedding_model))


def retrieve(index: Any, question: str, top_k: int, mmr: float | None = None
             ) -> list[dict[str, Any]]:
    """Top-k chunks with their source, position and score; MMR when a diversity factor is set."""
    kwargs: dict[str, Any] = {"similarity_top_k": top_k}
    if mmr is not None:
        kwargs |= {"vector_store_query_mode": "mmr", "vector_store_kwargs": {"mmr_threshold": mmr}}
    nodes = index.as_retriever(**kwargs).retrieve(question)
    return [{"source": n.node.metadata.get("doc_id"), "chunk_id": n.node.node_id,
             "start": n.node.start_char_idx, "score": n.score, "text": n.node.get_content()}
            for n in nodes]


def index_asset(name: str, spec: CorpusSpec, config: FactoryConfig) -> list[Definition]:
    @dg.asset(key=["index", name], group_name="rag", kinds={"chroma", "llamaindex"},
              deps=[dg.AssetKey(["corpus", name])],
              description=f"Chroma collection '{name}' of chunked, embedded corpus documents.")
    def _index(context: dg.AssetExecutionContext, store: ObjectStore,
               chroma: ChromaResource) -> dg.MaterializeResult:
        from llama_index.core import Document
        from llama_index.core.ingestion import DocstoreStrategy, IngestionPipeline
        from llama_index.core.node_parser import SentenceSplitter
        from llama_index.core.storage.docstore import SimpleDocumentStore
        from llama_index.vector_stores.chroma import ChromaVectorStore

        started = time.monotonic()
        corpus = current(store, "corpus", name)
        root = store.local_dir(corpus["prefix"])
        documents = [Document(text=p.read_text(), doc_id=p.stem, metadata={"doc_id": p.stem})
                     for p in sorted(Path(root, "docs").glob("*.txt"))]
        docstore_path = config.work_dir / "indexes" / name / "docstore.json"
        docstore = (SimpleDocumentStore.from_persist_path(str(docstore_path))
                    if docstore_path.exists() else SimpleDocumentStore())
        collection = chroma.client().get_or_create_collection(
            name, metadata={"hnsw:space": "cosine"})
        pipeline = IngestionPipeline(
            transformations=[
                SentenceSplitter(chunk_size=spec.chunk_size, chunk_overlap=spec.chunk_overlap),
                llama_index_embedding(spec.embedding_model),
            ],
            vector_store=ChromaVectorStore(chroma_collection=collection),
            docstore=docstore,
            docstore_strategy=DocstoreStrategy.UPSERTS,
        )
        embedded = pipeline.run(documents=documents, show_progress=False)
        docstore_path.parent.mkdir(parents=True, exist_ok=True)
        docstore.persist(str(docstore_path))
        index_seconds = time.monotonic() - started

        questions = [json.loads(line) for line in Path(root, "questions.jsonl").read_text()
                     .splitlines()]
        index = open_index(name, spec, chroma)
        hits = sum(q["source"] in {r["source"] for r in retrieve(index, q["question"], spec.top_k)}
                   for q in questions)
        hit_rate = hits / len(questions) if questions else 0.0
        sample = retrieve(index, questions[0]["question"], 3) if questions else []
        context.log.info(f"index {name}: {len(embedded)} chunks embedded, hit@{spec.top_k}="
                         f"{hit_rate:.3f}")
        return dg.MaterializeResult(
            metadata={
                "documents": len(documents),
                "chunks_embedded_this_run": len(embedded),
                "chunks_in_collection": collection.count(),
                f"hit_at_{spec.top_k}": hit_rate,
                "questions": len(questions),
                "index_seconds": round(index_seconds, 1),
                "chroma": chroma.location,
                "corpus_version": corpus["version"],
                "sample_query": dg.MetadataValue.json({
                    "question": questions[0]["question"] if questions else None,
                    "results": [{k: r[k] for k in ("source", "chunk_id", "score")}
                                for r in sample]}),
                "corpus": store_link(store, corpus["prefix"]),
            },
            data_version=dg.DataVersion(corpus["version"]),
        )

    return [_index]
