"""Exact duplicates by normalised-text hash, near duplicates by MinHash LSH over word shingles.

Signatures and the LSH index are rensa's (Rust): datasketch's pure-Python MinHash took half of
curation's time. LSH only proposes candidates; the caller confirms each with the exact Jaccard of
the shingle sets, so a decision never depends on the hash functions (with estimates, a 64-slot
signature called pairs at Jaccard 0.81 near-duplicates at a 0.85 threshold).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Set
from functools import lru_cache

import numpy as np

_WORD = re.compile(r"\w+")
_ASCII_NON_WORD = str.maketrans({c: " " for c in map(chr, range(128))
                                 if not (c.isalnum() or c == "_")})
SIGNATURE_SLOTS = 128
SEED = 1


def words_of(text: str) -> list[str]:
    """The words duplicates are judged on: lower case, without punctuation or white space
    (`\\w+`; for ASCII text the same words come from one C translate, twice as fast)."""
    if text.isascii():
        return text.lower().translate(_ASCII_NON_WORD).split()
    return _WORD.findall(text.lower())


def normalise_text(text: str) -> str:
    """The words, space-joined: what the exact-duplicate hash sees."""
    return " ".join(words_of(text))


def digest_of(normalised: str) -> bytes:
    return hashlib.blake2b(normalised.encode(), digest_size=16).digest()


def exact_key(text: str) -> str:
    return digest_of(normalise_text(text)).hex()


def shingles(words: list[str], n: int = 3) -> list[str]:
    """Word n-grams of a text's `words_of` (a short text is one shingle)."""
    if len(words) < n:
        return [" ".join(words)]
    return list(map(" ".join, zip(*(words[i:] for i in range(n)), strict=False)))


@lru_cache(maxsize=32)
def lsh_bands(threshold: float, slots: int = SIGNATURE_SLOTS,
              recall: float = 0.95) -> tuple[int, int]:
    """Bands x rows (bands * rows <= slots) that propose a pair at the threshold with
    probability >= `recall` (more above it) and the fewest pairs below it. Candidates are
    confirmed exactly, so a proposal costs time, a miss a duplicate left in."""
    s = np.linspace(0.0, threshold, 1001)
    best: tuple[float, int, int] | None = None
    for bands in range(1, slots + 1):
        for rows in range(1, slots // bands + 1):
            if 1.0 - (1.0 - threshold ** rows) ** bands < recall:
                continue
            below = float(np.trapezoid(1.0 - (1.0 - s ** rows) ** bands, s))
            if best is None or below < best[0]:
                best = (below, bands, rows)
    assert best is not None  # one band of one row proposes everything
    return best[1], best[2]


def jaccard(a: Set[str], b: Set[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


class NearDuplicateIndex:
    """MinHash LSH over the examples kept so far, keyed by their position in keeping order.

    Templated data shares whole phrases, so LSH proposes many pairs well below the threshold;
    the signatures' own estimate drops those before the caller's exact check. Kept signatures
    are one uint16 matrix (the low 16 bits of each slot: 256 bytes a row; a chance collision of
    1 in 65,536 a slot moves the estimate by nothing that matters)."""

    ESTIMATE_MARGIN = 0.1  # 3 standard deviations of a 128-slot estimate near the threshold

    def __init__(self, threshold: float) -> None:
        from rensa import RMinHashLSH

        bands, rows = lsh_bands(threshold)
        self.slots, self.threshold = bands * rows, threshold
        self.lsh = RMinHashLSH(threshold, self.slots, bands)
        self.kept = np.empty((4096, self.slots), dtype=np.uint16)
        self.count = 0

    def signatures(self, token_sets: list[list[str]]) -> list:  # type: ignore[type-arg]
        from rensa import RMinHash

        return RMinHash.from_token_sets(token_sets, self.slots, SEED)

    @staticmethod
    def low_bits(signature: object) -> np.ndarray:
        """What the index keeps of a signature, and compares with."""
        return np.asarray(signature.digest(), dtype=np.uint32).astype(np.uint16)  # type: ignore[attr-defined]

    def candidates(self, signature: object, low_bits: np.ndarray) -> list[int]:
        """Kept examples that may reach the threshold with this one, oldest first."""
        hits = np.fromiter(self.lsh.query(signature), dtype=np.int64)
        if not len(hits):
            return []
        estimate = np.count_nonzero(self.kept[hits] == low_bits, axis=1)
        close = hits[estimate >= (self.threshold - self.ESTIMATE_MARGIN) * self.slots]
        return sorted(close.tolist())

    def add(self, signature: object, low_bits: np.ndarray) -> None:
        if self.count == len(self.kept):
            self.kept = np.concatenate([self.kept, np.empty_like(self.kept)])
        self.kept[self.count] = low_bits
        self.lsh.insert(self.count, signature)
        self.count += 1
