"""Curation's fast path changes no output: the fixture gallery curates to the same bytes as the
pure-Python implementation it replaced, and every near-duplicate decision holds exactly."""

import hashlib
import itertools
import random
from pathlib import Path

from config.datasets import DatasetSpec
from config.loading import load_config
from curation import dedupe, formats
from curation.pipeline import curate
from ingest.demo_data import math_problems
from ingest.sources import RawRecord
from pipelines.graph import resources_for
from tests.support import gallery
from tests.support.dataset_projects import project, run, version

# Written by the datasketch/pure-Python curation (commit c228e31) from the same gallery.
REFERENCE_VERSION = "b2ce9ccc4276773e"
REFERENCE_FILES = {"quarantine.jsonl": "c3404a5c231f", "test.jsonl": "a7038137a7b8",
                   "train.jsonl": "d436af79a909", "val.jsonl": "e3b0c44298fc"}


def test_the_gallery_curates_to_the_reference_bytes(tmp_path: Path) -> None:
    gallery.write_good(tmp_path / "data")
    gallery.write_broken_rows(tmp_path / "data")
    cfg = project(tmp_path, quality={"max_rejected_fraction": 1.0, "min_test": 0},
                  pii={"scrub": True})
    result = run(cfg)
    store = resources_for(load_config(cfg))["store"]
    folder = store.local_dir(store.read_ref("dataset/chats")["prefix"])
    written = {p.name: hashlib.sha256(p.read_bytes()).hexdigest()[:12]
               for p in sorted(folder.glob("*.jsonl"))}
    assert (version(result), written) == (REFERENCE_VERSION, REFERENCE_FILES)


def shingle_set(example: dict) -> set[str]:
    return set(dedupe.shingles(dedupe.words_of(formats.example_text(example))))


def test_near_duplicates_are_exactly_the_pairs_at_or_above_the_threshold() -> None:
    """Variants of templated rows with 1-4 words changed straddle the threshold. A rejection is
    never a pair below it (decisions use the exact Jaccard, not an estimate), and no pair 0.05
    or more above it is missed (LSH proposes those with probability > 0.99)."""
    rng = random.Random(3)
    rows = []
    for problem in math_problems.generate(25, seed=5):
        text = f"{problem['messages'][1]['content']} {problem['messages'][2]['content']}"
        rows.append(text)
        for changes in (1, 2, 4):
            words = text.split()
            for _ in range(changes):
                words[rng.randrange(len(words))] = f"word{rng.randint(0, 99)}"
            rows.append(" ".join(words))
    records = [RawRecord("v.jsonl", i + 1, {"prompt": "Say it.", "completion": t})
               for i, t in enumerate(rows)]
    threshold = 0.8
    curated = curate(records, DatasetSpec.model_validate({
        "sources": [{"path": "data"}], "dedupe": {"near": True, "threshold": threshold}}),
        None, None)
    by_row = {r.row: formats.normalise(r.data, "chat") for r in records}
    rejected = {r.row: r for r in curated.rejections if r.reason == "near_duplicate"}
    assert rejected, "the fixture has near-duplicates"
    for row, rejection in rejected.items():
        kept_row = int(rejection.detail.split(":")[1].split(" ")[0])
        assert kept_row not in rejected and kept_row < row
        assert dedupe.jaccard(shingle_set(by_row[row]), shingle_set(by_row[kept_row])) \
            >= threshold
    kept = [row for row in by_row if row not in rejected
            and row not in {r.row for r in curated.rejections}]
    for a, b in itertools.combinations(kept, 2):
        assert dedupe.jaccard(shingle_set(by_row[a]), shingle_set(by_row[b])) < threshold + 0.05
