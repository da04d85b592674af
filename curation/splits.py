"""Deterministic train/val/test assignment by seed, optionally stratified by a field.

Examples are keyed by their prompt, so duplicates of a prompt always share a split (no leak).
Unstratified: a hash threshold, so a row keeps its split when other rows come and go.
Stratified: within each stratum rows are ordered by hash and cut at the exact proportions.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence

SPLITS = ("train", "val", "test")


def unit_hash(seed: int, key: str) -> float:
    return int(hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()[:12], 16) / float(1 << 48)


def assign(keys: Sequence[str], val: float, test: float, seed: int,
           strata: Sequence[str] | None = None) -> list[str]:
    if strata is None:
        out = []
        for key in keys:
            u = unit_hash(seed, key)
            out.append("test" if u < test else "val" if u < test + val else "train")
        return out
    # A prompt key belongs to the stratum of its first row, so all its rows go together.
    key_stratum: dict[str, str] = {}
    for key, stratum in zip(keys, strata, strict=True):
        key_stratum.setdefault(key, stratum)
    groups: dict[str, list[str]] = defaultdict(list)
    for key, stratum in key_stratum.items():
        groups[stratum].append(key)
    where: dict[str, str] = {}
    for members in groups.values():
        ordered = sorted(members, key=lambda k: unit_hash(seed, k))
        n_test, n_val = round(len(ordered) * test), round(len(ordered) * val)
        for j, key in enumerate(ordered):
            where[key] = "test" if j < n_test else "val" if j < n_test + n_val else "train"
    return [where[key] for key in keys]
