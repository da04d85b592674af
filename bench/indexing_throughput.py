"""Indexing throughput through the Dagster assets vs bare sentence-transformers, and the cost of
an incremental re-index after one document of 1,000 changes.

    .venvs/factory/bin/python -m bench.indexing_throughput [--documents 1000]

Same run, same machine: (a) the reindex job (parse -> LlamaIndex ingestion pipeline with docstore
-> Chroma) embeds N generated filings; the same chunk texts are then encoded by a bare
SentenceTransformer with the same batch size; ratio = asset chunks/s / bare chunks/s (goal >= 0.8).
(b) one document is edited and the job runs again; ratio = re-index time / full index time
(goal <= 0.02), for the index asset alone and for the whole job.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import dagster as dg
import yaml

from config.loading import load_config
from ingest.demo_data import filings
from pipelines.graph import make_definitions, resources_for
from resources.embeddings import BUNDLED, model_path


def run_job(config_path: Path) -> tuple[float, dict[str, Any]]:
    config = load_config(config_path)
    job = make_definitions(config).resolve_job_def("reindex_docs")
    started = time.perf_counter()
    result = job.execute_in_process(instance=dg.DagsterInstance.ephemeral())
    seconds = time.perf_counter() - started
    assert result.success
    meta = {e.asset_key.to_user_string(): {k: v.value for k, v in
                                           e.materialization.metadata.items()}
            for e in result.get_asset_materialization_events()}
    return seconds, meta["index/docs"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--documents", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "docs").mkdir()
        per_seed = 250  # the generator has 260 distinct companies; seeds vary the rest
        for seed in range(0, args.documents // per_seed + 1):
            count = min(per_seed, args.documents - seed * per_seed)
            for doc in filings.generate(count, seed=11 + seed) if count > 0 else []:
                (root / "docs" / f"{seed}-{doc.doc_id}.txt").write_text(doc.text)
        config_path = root / "factory.yaml"
        config_path.write_text(yaml.safe_dump({
            "storage": {"object_store": "file://store", "work_dir": "work"},
            "corpora": {"docs": {"source": {"path": "docs"}}}}))

        full_job_s, full = run_job(config_path)
        chunks = resources_for(load_config(config_path))["chroma"].client().get_collection(
            "docs").get(include=["documents"])["documents"]

        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(model_path(BUNDLED)), device="cpu")
        model.encode(chunks[:32], batch_size=32)  # warm-up, as the asset's model is warm too
        started = time.perf_counter()
        model.encode(chunks, batch_size=32, normalize_embeddings=True)
        bare_s = time.perf_counter() - started

        edited = root / "docs" / sorted((root / "docs").iterdir())[len(chunks) % 7].name
        edited.write_text(edited.read_text() + "\n\nAddendum: the auditor was replaced.")
        inc_job_s, inc = run_job(config_path)

    asset_rate = full["chunks_embedded_this_run"] / full["index_seconds"]
    bare_rate = len(chunks) / bare_s
    print(f"documents: {args.documents}, chunks: {len(chunks)}")
    print(f"(a) index asset: {asset_rate:.1f} chunks/s ({full['index_seconds']:.1f} s); bare "
          f"SentenceTransformer.encode: {bare_rate:.1f} chunks/s ({bare_s:.1f} s); "
          f"ratio {asset_rate / bare_rate:.2f} (goal >= 0.8)")
    index_ratio = inc["index_seconds"] / full["index_seconds"]
    print(f"(b) one document changed: index asset {inc['index_seconds']:.2f} s vs "
          f"{full['index_seconds']:.1f} s full, ratio {index_ratio:.3f}"
          f" (goal <= 0.02); whole job (parse + publish + index) {inc_job_s:.1f} s vs "
          f"{full_job_s:.1f} s, ratio {inc_job_s / full_job_s:.3f}; re-embedded "
          f"{inc['chunks_embedded_this_run']} chunks, counts added/updated/deleted/unchanged = "
          f"{inc['documents_added']}/{inc['documents_updated']}/{inc['documents_deleted']}/"
          f"{inc['documents_unchanged']}")


if __name__ == "__main__":
    main()
