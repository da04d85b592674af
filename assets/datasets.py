"""Instruction datasets: generated (demo) rows normalised to chat messages, deduplicated, split.

The version is the content hash of the curated splits, so it is the lineage key of every adapter
trained on it: unchanged data -> same version -> the adapter is reused, not retrained.
"""


import hashlib
import json
import re
from collections import Counter
from pathlib import Path

import dagster as dg

from assets.common import Definition, current, file_digest, publish, store_link
from assets.demo_data import math_problems
from pipelines.config import DatasetSpec, FactoryConfig
from resources.object_store import ObjectStore

SPLITS = ("train", "val", "test")


def _normalised_prompt(row: dict) -> str:
    text = " ".join(m["content"] for m in row["messages"] if m["role"] != "assistant")
    return re.sub(r"\s+", " ", text.lower()).strip()


def assign_split(key: str, val: float, test: float, seed: int) -> str:
    """Deterministic by (seed, content): a row keeps its split when other rows change."""
    u = int(hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "test" if u < test else "val" if u < test + val else "train"


def curate(rows: list[dict], spec: DatasetSpec) -> tuple[dict[str, list[dict]], int]:
    """Drop exact duplicate prompts (before splitting, so no prompt leaks across splits)."""
    seen: set[str] = set()
    splits: dict[str, list[dict]] = {s: [] for s in SPLITS}
    duplicates = 0
    for row in rows:
        key = _normalised_prompt(row)
        if key in seen:
            duplicates += 1
            continue
        seen.add(key)
        splits[assign_split(key, spec.split.val, spec.split.test, spec.split.seed)].append(row)
    return splits, duplicates


def dataset_asset(name: str, spec: DatasetSpec, config: FactoryConfig) -> list[Definition]:
    @dg.asset(
        key=["dataset", name], group_name="data", kinds={"json"},
        description=f"Instruction dataset '{name}' as chat messages, split train/val/test.",
    )
    def _dataset(context: dg.AssetExecutionContext, store: ObjectStore) -> dg.MaterializeResult:
        rows = list(math_problems.generate(spec.source.rows, spec.source.seed))
        splits, duplicates = curate(rows, spec)
        out = config.work_dir / "runs" / "dataset" / name
        out.mkdir(parents=True, exist_ok=True)
        paths = []
        for split, split_rows in splits.items():
            path = out / f"{split}.jsonl"
            path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in split_rows))
            paths.append(path)
        version = file_digest(*paths)
        counts = {s: len(r) for s, r in splits.items()}
        publish(store, "dataset", name, version, out, counts=counts)
        ref = current(store, "dataset", name)
        context.log.info(f"dataset {name}@{version}: {counts}, {duplicates} duplicates removed")
        kinds = Counter(r.get("kind", "?") for r in splits["train"])
        preview = json.dumps(splits["train"][0]["messages"], indent=1) if splits["train"] else ""
        return dg.MaterializeResult(
            metadata={
                "version": version,
                "rows_in": len(rows),
                "duplicates_removed": duplicates,
                **{f"{s}_rows": n for s, n in counts.items()},
                "train_kinds": dict(kinds),
                "example": dg.MetadataValue.md(f"```json\n{preview}\n```"),
                "location": store_link(store, ref["prefix"]),
            },
            data_version=dg.DataVersion(version),
        )

    @dg.asset_check(name="splits_disjoint", asset=_dataset, blocking=True,
                    description="Every split has rows and no prompt appears in two splits.")
    def _splits_disjoint(store: ObjectStore) -> dg.AssetCheckResult:
        ref = current(store, "dataset", name)
        root = store.local_dir(ref["prefix"])
        prompts = {s: {_normalised_prompt(json.loads(line))
                       for line in Path(root, f"{s}.jsonl").read_text().splitlines()}
                   for s in SPLITS}
        overlaps = {f"{a}&{b}": len(prompts[a] & prompts[b])
                    for i, a in enumerate(SPLITS) for b in SPLITS[i + 1:]}
        empty = [s for s in SPLITS if not prompts[s]]
        return dg.AssetCheckResult(
            passed=not empty and not any(overlaps.values()),
            metadata={"overlaps": overlaps, "empty_splits": empty},
        )

    return [_dataset, _splits_disjoint]
