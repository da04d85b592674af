"""Curation throughput on generated chat rows, next to a bare pandas read of the same files.

    .venvs/factory/bin/python -m bench.curation_throughput [--rows 100000]

Both sides read the same JSONL files from disk in the same run, each in a fresh process so its
peak resident memory is its own (libraries included); the ratio says what validation,
normalisation, PII scrubbing, exact + MinHash near-duplicate removal, token counting, splitting and
serialising the split rows cost on top of just parsing them. `--rows 1000000` is the scale check
(goal: under 2 GiB). It also prints the bound exact token counting alone puts on the ratio: the
tokenizer's CPU time for the kept rows, spread over every core.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

from ingest.demo_data import math_problems


def write_rows(folder: Path, rows: int, files: int = 4) -> None:
    """Rows spread round-robin over `files` files, about 1 % with an e-mail address to scrub."""
    rng = random.Random(0)
    handles = [(folder / f"part-{i}.jsonl").open("w") for i in range(files)]
    for i, row in enumerate(math_problems.generate(rows, seed=1)):
        if rng.random() < 0.01:
            user = row["messages"][1]
            user["content"] += f" Mail me at user{rng.randint(1, 999)}@x.org."
        handles[i % files].write(json.dumps({"messages": row["messages"],
                                             "kind": row["kind"]}) + "\n")
    for handle in handles:
        handle.close()


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def pandas_side(root: Path) -> dict[str, Any]:
    import pandas as pd

    started = time.perf_counter()
    frames = [pd.read_json(p, lines=True) for p in sorted((root / "data").glob("*.jsonl"))]
    return {"rows": sum(len(f) for f in frames), "seconds": time.perf_counter() - started,
            "peak_mib": peak_mib()}


def curation_side(root: Path) -> dict[str, Any]:
    from config.datasets import DatasetSpec, FileSource
    from curation.pipeline import curate
    from curation.tokens import TokenCounter
    from ingest.sources import read_source
    from resources.embeddings import BUNDLED, model_path

    spec = DatasetSpec.model_validate({
        "sources": [{"path": "data"}], "pii": {"scrub": True},
        "split": {"val": 0.05, "test": 0.1, "seed": 0, "stratify_by": "kind"}})
    counter = TokenCounter(model_path(BUNDLED))
    started = time.perf_counter()
    items = read_source(FileSource(path="data"), root, root / "staging", None)
    curated = curate(items, spec, counter, max_tokens=512)
    seconds, peak = time.perf_counter() - started, peak_mib()
    return {"rows": curated.rows_in, "seconds": seconds, "peak_mib": peak,
            "stages": curated.seconds, "kept": sum(len(v) for v in curated.lines.values()),
            "reasons": dict(curated.reasons), "pii": dict(curated.pii_counts),
            "count_cpu_seconds": token_counting_cpu(curated, counter)}


def token_counting_cpu(curated: Any, counter: Any) -> float:
    """CPU seconds the tokenizer alone spends counting the kept rows on one core."""
    from curation.tokens import counting_on_one_core

    texts = [counter.render(json.loads(line)) for lines in curated.lines.values()
             for line in lines]
    with counting_on_one_core():
        started = time.process_time()
        counter.count(texts)
        return time.process_time() - started


def in_fresh_process(side: str, root: Path) -> dict[str, Any]:
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(globals()[side], (root,))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "data").mkdir()
        write_rows(root / "data", args.rows)
        bare = in_fresh_process("pandas_side", root)
        ours = in_fresh_process("curation_side", root)

    print(f"rows: {bare['rows']:,}")
    pandas_rate, curate_rate = bare["rows"] / bare["seconds"], ours["rows"] / ours["seconds"]
    print(f"pandas read_json (bare parse):  {bare['seconds']:7.2f} s  {pandas_rate:12,.0f} rows/s"
          f"  peak {bare['peak_mib']:,.0f} MiB")
    print(f"factory curation (full):        {ours['seconds']:7.2f} s  {curate_rate:12,.0f} rows/s"
          f"  peak {ours['peak_mib']:,.0f} MiB")
    print("  stages: " + ", ".join(f"{k} {v:.2f}s" for k, v in ours["stages"].items()))
    print(f"  kept {ours['kept']:,}, quarantined {ours['reasons']}, pii {ours['pii']}")
    print(f"ratio curation/pandas rows per second: {curate_rate / pandas_rate:.2f}")
    # Every kept row's tokens are counted exactly; even with all other work free, that CPU
    # shared over this machine's cores bounds the rate.
    cores = len(os.sched_getaffinity(0))
    bound = ours["rows"] * cores / ours["count_cpu_seconds"]
    print(f"  token counting alone: {ours['count_cpu_seconds']:.2f} CPU s for the kept rows; "
          f"over {cores} cores at most {bound:,.0f} rows/s, a ratio of "
          f"{bound / pandas_rate:.2f}")


if __name__ == "__main__":
    main()
