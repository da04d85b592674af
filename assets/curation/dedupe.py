"""Exact duplicates by normalised-text hash, near duplicates by MinHash LSH over word shingles."""

from __future__ import annotations

import hashlib
import re

_PUNCT = re.compile(r"[^\w\s]")
_SPACE = re.compile(r"\s+")


def normalise_text(text: str) -> str:
    return _SPACE.sub(" ", _PUNCT.sub(" ", text.lower())).strip()


def exact_key(text: str) -> str:
    return hashlib.blake2b(normalise_text(text).encode(), digest_size=16).hexdigest()


def shingles(text: str, n: int = 3) -> set[bytes]:
    words = normalise_text(text).split()
    if len(words) < n:
        return {" ".join(words).encode()}
    return {" ".join(words[i:i + n]).encode() for i in range(len(words) - n + 1)}


class NearDuplicateIndex:
    """Estimated Jaccard similarity >= threshold against anything kept so far."""

    def __init__(self, threshold: float, num_perm: int = 64) -> None:
        from datasketch import MinHashLSH

        self.num_perm, self.threshold = num_perm, threshold
        self.lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        self.kept: dict[str, object] = {}

    def signatures(self, texts: list[str]) -> list:  # type: ignore[type-arg]
        from datasketch import LeanMinHash, MinHash

        return [LeanMinHash(m) for m in MinHash.bulk([shingles(t) for t in texts],
                                                     num_perm=self.num_perm)]

    def match_or_add(self, key: str, signature: object) -> str | None:
        """The key of a near-duplicate already kept, or None (and the example is kept).

        LSH buckets only propose candidates; each is confirmed by its estimated Jaccard, so
        templated rows that differ in a number or a name are not thrown away."""
        for hit in sorted(self.lsh.query(signature)):
            if signature.jaccard(self.kept[hit]) >= self.threshold:  # type: ignore[attr-defined]
                return hit
        self.lsh.insert(key, signature)
        self.kept[key] = signature
        return None
