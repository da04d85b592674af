"""Curation throughput on 100k generated chat rows, next to a bare pandas read of the same files.

    .venvs/factory/bin/python -m bench.curation_throughput [--rows 100000]

Both sides read the same JSONL files from disk in the same run; the ratio says what validation,
normalisation, PII scrubbing, exact + MinHash near-duplicate removal, token counting and splitting
cost on top of just parsing the rows.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import pandas as pd

from assets.curation.pipeline import curate
from assets.curation.tokens import TokenCounter
from assets.demo_data import math_problems
from assets.ingest.sources import read_source
from config.schema import DatasetSpec, FileSource
from resources.embeddings import BUNDLED, model_path


def write_rows(folder: Path, rows: int, files: int = 4) -> None:
    rng = random.Random(0)
    generated = list(math_problems.generate(rows, seed=1))
    for i in range(files):
        with (folder / f"part-{i}.jsonl").open("w") as f:
            for row in generated[i::files]:
                if rng.random() < 0.01:
                    user = row["messages"][1]
                    user["content"] += f" Mail me at user{rng.randint(1, 999)}@x.org."
                f.write(json.dumps({"messages": row["messages"], "kind": row["kind"]}) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "data").mkdir()
        write_rows(root / "data", args.rows)

        started = time.perf_counter()
        frames = [pd.read_json(p, lines=True) for p in sorted((root / "data").glob("*.jsonl"))]
        pandas_rows = sum(len(f) for f in frames)
        pandas_s = time.perf_counter() - started

        spec = DatasetSpec.model_validate({
            "sources": [{"path": "data"}], "pii": {"scrub": True},
            "split": {"val": 0.05, "test": 0.1, "seed": 0, "stratify_by": "kind"}})
        counter = TokenCounter(model_path(BUNDLED))
        started = time.perf_counter()
        items = read_source(FileSource(path="data"), root, root / "staging", None)
        curated = curate(items, spec, counter, max_tokens=512)
        curate_s = time.perf_counter() - started

    kept = sum(len(v) for v in curated.splits.values())
    print(f"rows: {pandas_rows:,}")
    pandas_rate, curate_rate = pandas_rows / pandas_s, curated.rows_in / curate_s
    print(f"pandas read_json (bare parse):  {pandas_s:7.2f} s  {pandas_rate:12,.0f} rows/s")
    print(f"factory curation (full):        {curate_s:7.2f} s  {curate_rate:12,.0f} rows/s")
    print("  stages: " + ", ".join(f"{k} {v:.2f}s" for k, v in curated.seconds.items()))
    print(f"  kept {kept:,}, quarantined {dict(curated.reasons)}, pii {dict(curated.pii_counts)}")
    print(f"ratio curation/pandas rows per second: {curate_rate / pandas_rate:.2f}")


if __name__ == "__main__":
    main()
