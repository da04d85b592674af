"""Raw records -> curated splits + quarantine, in one pass everyone can read top to bottom.

Order matters: normalise (bad rows out) -> scrub PII (so hashes see scrubbed text) -> exact and
near-duplicate removal (before splitting, so nothing leaks across splits) -> length policy ->
deterministic split. Every row that does not reach a split is in `rejections` with its reason.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from assets.curation import dedupe, formats, pii, splits
from assets.curation.tokens import TokenCounter
from assets.ingest.problems import Rejection
from assets.ingest.sources import Item
from config.schema import DatasetSpec

# Rejection reasons that are curation decisions, not bad input (the quality gate ignores them).
CURATION_REASONS = {"duplicate", "near_duplicate"}


@dataclass
class Curated:
    splits: dict[str, list[dict[str, Any]]]
    rejections: list[Rejection]
    rows_in: int
    pii_counts: Counter[str] = field(default_factory=Counter)
    lengths: list[int] = field(default_factory=list)
    truncated: int = 0
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def reasons(self) -> Counter[str]:
        return Counter(r.reason for r in self.rejections)

    @property
    def invalid_fraction(self) -> float:
        bad = sum(n for reason, n in self.reasons.items() if reason not in CURATION_REASONS)
        return bad / self.rows_in if self.rows_in else 0.0


def _pack(texts: list[str], counter: TokenCounter, block: int) -> list[dict[str, Any]]:
    """Continued pre-training: concatenate documents (EOS between) and cut into token blocks."""
    tok = counter.tokenizer
    ids: list[int] = []
    for text in texts:
        ids.extend(tok(text, add_special_tokens=False)["input_ids"])
        if tok.eos_token_id is not None:
            ids.append(tok.eos_token_id)
    return [{"text": tok.decode(ids[i:i + block])} for i in range(0, len(ids), block)
            if len(ids[i:i + block]) >= block // 4]


def curate(items: Iterable[Item], spec: DatasetSpec, counter: TokenCounter | None,
           max_tokens: int | None) -> Curated:
    t0 = time.monotonic()
    rejections: list[Rejection] = []
    kept: list[tuple[str, int, dict[str, Any], str]] = []  # file, row, example, stratum
    rows_in = 0
    pii_counts: Counter[str] = Counter()
    for item in items:
        rows_in += 1
        if isinstance(item, Rejection):
            rejections.append(item)
            continue
        example = formats.normalise(item.data, spec.kind, spec.format, spec.field_map)
        if isinstance(example, formats.Invalid):
            rejections.append(Rejection(item.file, item.row, example.reason, example.field,
                                        example.detail, example.fix, item.data))
            continue
        if spec.pii.scrub:
            example, found = pii.scrub_example(
                example, lambda t: pii.scrub(t, tuple(spec.pii.kinds)))
            pii_counts += found
        stratum = str(item.data.get(spec.split.stratify_by, "")) if spec.split.stratify_by else ""
        kept.append((item.file, item.row, example, stratum))
    t1 = time.monotonic()

    # exact duplicates, then near duplicates against everything kept so far
    first_seen: dict[str, str] = {}
    unique: list[tuple[str, int, dict[str, Any], str]] = []
    for file, row, example, stratum in kept:
        key = dedupe.exact_key(formats.example_text(example))
        if key in first_seen:
            rejections.append(Rejection(file, row, "duplicate", None,
                                        f"same text as {first_seen[key]}",
                                        "nothing to fix; the first copy is kept", example))
            continue
        first_seen[key] = f"{file}:{row}"
        unique.append((file, row, example, stratum))
    if spec.dedupe.near and unique and spec.kind != "pretrain":
        index = dedupe.NearDuplicateIndex(spec.dedupe.threshold)
        signatures = index.signatures([formats.example_text(u[2]) for u in unique])
        survivors = []
        for (file, row, example, stratum), sig in zip(unique, signatures, strict=True):
            match = index.match_or_add(f"{file}:{row}", sig)
            if match is not None:
                rejections.append(Rejection(file, row, "near_duplicate", None,
                                            f"near-duplicate of {match} (Jaccard >= "
                                            f"{spec.dedupe.threshold})",
                                            "nothing to fix; the first copy is kept", example))
                continue
            survivors.append((file, row, example, stratum))
        unique = survivors
    t2 = time.monotonic()

    examples = [u[2] for u in unique]
    lengths: list[int] = []
    truncated = 0
    if counter is not None and spec.kind == "pretrain":
        examples = _pack([e["text"] for e in examples], counter, spec.block_size)
        unique = [("packed", i + 1, e, "") for i, e in enumerate(examples)]
        lengths = [spec.block_size] * len(examples)
    elif counter is not None:
        lengths = counter.lengths(examples)
        if max_tokens:
            survivors, kept_lengths = [], []
            for u, n in zip(unique, lengths, strict=True):
                if n <= max_tokens:
                    survivors.append(u)
                    kept_lengths.append(n)
                elif spec.over_length == "truncate":
                    truncated += 1  # the trainer cuts it at sequence_len
                    survivors.append(u)
                    kept_lengths.append(n)
                else:
                    rejections.append(Rejection(u[0], u[1], "too_long", None,
                                                f"{n} tokens > max_tokens {max_tokens}",
                                                "shorten it, raise max_tokens or set "
                                                "over_length: truncate", u[2]))
            unique, lengths = survivors, kept_lengths
    t3 = time.monotonic()

    keys = [dedupe.exact_key(formats.prompt_text(u[2])) for u in unique]
    strata = [u[3] for u in unique] if spec.split.stratify_by else None
    assigned = splits.assign(keys, spec.split.val, spec.split.test, spec.split.seed, strata)
    out: dict[str, list[dict[str, Any]]] = {s: [] for s in splits.SPLITS}
    for u, split in zip(unique, assigned, strict=True):
        out[split].append(u[2])
    t4 = time.monotonic()
    return Curated(out, rejections, rows_in, pii_counts, lengths, truncated, seconds={
        "read_normalise": t1 - t0, "dedupe": t2 - t1, "tokens": t3 - t2, "split": t4 - t3})
