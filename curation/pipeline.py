"""Raw records -> curated splits + quarantine, in one pass everyone can read top to bottom.

Order matters: normalise (bad rows out) -> scrub PII (so hashes see scrubbed text) -> exact and
near-duplicate removal (before splitting, so nothing leaks across splits) -> length policy ->
deterministic split. Every row that does not reach a split is in `rejections` with its reason.

Rows stream through in chunks: a kept row is held as the JSON line its split file gets (a fifth
of the memory of the parsed example), so a million rows curate in well under 2 GiB. A chunk's
tokens are counted on a second thread while the next chunk is read; its rows are kept or
rejected as too long, in input order, once that count is back.
"""

from __future__ import annotations

import gc
import json
import sys
import time
from collections import Counter, defaultdict, deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Any

from config.datasets import DatasetSpec
from curation import dedupe, formats, pii, splits
from curation.tokens import TokenCounter, counting_on_one_core
from ingest.problems import JsonLine, Rejection
from ingest.sources import Item

# Rejection reasons that are curation decisions, not bad input (the quality gate ignores them).
CURATION_REASONS = {"duplicate", "near_duplicate"}
CHUNK = 8192
# file, row, example, stratum; a survivor of the near-duplicate stage adds its split-file line
Row = tuple[str, int, dict[str, Any], str]
Survivor = tuple[str, int, dict[str, Any], str, str | None]


def to_line(example: dict[str, Any]) -> str:
    """One row of a split file, exactly as written."""
    return json.dumps(example, sort_keys=True, ensure_ascii=False)


def _as_record(example: dict[str, Any]) -> JsonLine:
    """A rejected example as the quarantine gets it (keys in their order)."""
    return JsonLine(json.dumps(example, ensure_ascii=False))


@dataclass
class Curated:
    lines: dict[str, list[str]]  # split -> its rows as JSON lines, in input order
    rejections: list[Rejection]
    rows_in: int
    pii_counts: Counter[str] = field(default_factory=Counter)
    lengths: list[int] = field(default_factory=list)
    truncated: int = 0
    seconds: dict[str, float] = field(default_factory=dict)

    @cached_property
    def splits(self) -> dict[str, list[dict[str, Any]]]:
        """The rows parsed back (for small datasets and tests: a big one stays as lines)."""
        return {s: [json.loads(line) for line in rows] for s, rows in self.lines.items()}

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


@dataclass
class _Pending:
    """A chunk of unique rows waiting for the near-duplicate and length stages."""

    rows: list[Row] = field(default_factory=list)
    words: list[list[str]] = field(default_factory=list)  # each row's words, for its shingles


class _Curation:
    """The state of one curation run: what is kept so far and why the rest was not."""

    def __init__(self, spec: DatasetSpec, counter: TokenCounter | None,
                 max_tokens: int | None, counting_thread: ThreadPoolExecutor) -> None:
        self.spec, self.counter, self.max_tokens = spec, counter, max_tokens
        self.counting_thread = counting_thread
        # settled chunks whose lengths are being counted, oldest first
        self.counting: deque[tuple[list[Survivor], Future[list[int]] | None]] = deque()
        # quarantine in stage order (bad rows, duplicates, near duplicates, too long)
        self.rejected: dict[str, list[Rejection]] = defaultdict(list)
        self.first_seen: dict[bytes, tuple[str, int]] = {}
        self.near = (dedupe.NearDuplicateIndex(spec.dedupe.threshold)
                     if spec.dedupe.near and spec.kind != "pretrain" else None)
        self.near_kept: list[tuple[str, int, str]] = []  # file, row, line per index position
        # templated rows keep meeting the same few kept rows: their shingles are rebuilt once
        self.kept_shingles = lru_cache(maxsize=8192)(self._shingles_of_kept)
        self.lines: list[str] = []
        self.prompt_keys: list[str] = []
        self.strata: list[str] = []
        self.lengths: list[int] = []
        self.documents: list[str] = []  # continued pre-training: packed at the end
        self.truncated = 0
        self.rows_in = 0
        self.pii_counts: Counter[str] = Counter()
        self.seconds: Counter[str] = Counter()

    def add_unless_duplicate(self, file: str, row: int, example: dict[str, Any], stratum: str,
                             pending: _Pending) -> None:
        """Quarantine an exact duplicate (same normalised text) of an earlier row, or queue it."""
        words = dedupe.words_of(formats.example_text(example))
        key = dedupe.digest_of(" ".join(words))
        if key in self.first_seen:
            seen_file, seen_row = self.first_seen[key]
            self.rejected["duplicate"].append(Rejection(
                file, row, "duplicate", None, f"same text as {seen_file}:{seen_row}",
                "nothing to fix; the first copy is kept", _as_record(example)))
            return
        self.first_seen[key] = (file, row)
        pending.rows.append((file, row, example, stratum))
        pending.words.append(words)

    def settle(self, pending: _Pending) -> None:
        """Near duplicates for one chunk; its survivors' tokens are counted on the counting
        thread while the next chunk is read, and the chunk before this one is finished."""
        started = time.monotonic()
        rows = (self._drop_near_duplicates(pending) if self.near
                else [(*u, None) for u in pending.rows])
        self.seconds["dedupe"] += time.monotonic() - started
        started = time.monotonic()
        if self.spec.kind == "pretrain":
            self.documents += [r[2]["text"] for r in rows]
        else:
            lengths = None
            if self.counter is not None:
                texts = [self.counter.render(r[2]) for r in rows]
                lengths = self.counting_thread.submit(self.counter.count, texts)
            self.counting.append((rows, lengths))
            while len(self.counting) > 1:
                self._apply_length_policy(*self.counting.popleft())
        self.seconds["tokens"] += time.monotonic() - started

    def finish(self) -> None:
        """The chunks still being counted, in order."""
        started = time.monotonic()
        while self.counting:
            self._apply_length_policy(*self.counting.popleft())
        self.seconds["tokens"] += time.monotonic() - started

    def _apply_length_policy(self, rows: list[Survivor],
                             counted: Future[list[int]] | None) -> None:
        """Survivors become lines, in input order, unless too long for `max_tokens`."""
        lengths = counted.result() if counted is not None else [None] * len(rows)
        for (file, row, example, stratum, line), n in zip(rows, lengths, strict=True):
            if n is not None and self.max_tokens and n > self.max_tokens:
                if self.spec.over_length != "truncate":
                    self.rejected["too_long"].append(Rejection(
                        file, row, "too_long", None, f"{n} tokens > max_tokens "
                        f"{self.max_tokens}", "shorten it, raise max_tokens or set "
                        "over_length: truncate", _as_record(example)))
                    continue
                self.truncated += 1  # the trainer cuts it at sequence_len
            self.keep(example, stratum, n, line)

    def keep(self, example: dict[str, Any], stratum: str, length: int | None,
             line: str | None = None) -> None:
        self.lines.append(line or to_line(example))
        self.prompt_keys.append(dedupe.exact_key(formats.prompt_text(example)))
        self.strata.append(sys.intern(stratum))
        if length is not None:
            self.lengths.append(length)

    def _drop_near_duplicates(self, pending: _Pending) -> list[Survivor]:
        """Keep a row unless its shingles' Jaccard with one kept before reaches the threshold.
        A kept candidate's shingles are rebuilt from its line: candidates are rare."""
        assert self.near is not None
        threshold = self.spec.dedupe.threshold
        token_sets = [dedupe.shingles(words) for words in pending.words]
        survivors = []
        for u, tokens, signature in zip(pending.rows, token_sets,
                                        self.near.signatures(token_sets), strict=True):
            low_bits = self.near.low_bits(signature)
            candidates = self.near.candidates(signature, low_bits)
            mine = set(tokens) if candidates else set()
            match = next((hit for hit in candidates
                          if dedupe.jaccard(mine, self.kept_shingles(hit)) >= threshold), None)
            if match is not None:
                kept_file, kept_row, _ = self.near_kept[match]
                self.rejected["near_duplicate"].append(Rejection(
                    u[0], u[1], "near_duplicate", None,
                    f"near-duplicate of {kept_file}:{kept_row} (Jaccard >= {threshold})",
                    "nothing to fix; the first copy is kept", _as_record(u[2])))
                continue
            self.near.add(signature, low_bits)
            line = to_line(u[2])
            self.near_kept.append((u[0], u[1], line))
            survivors.append((*u, line))
        return survivors

    def _shingles_of_kept(self, position: int) -> frozenset[str]:
        example = json.loads(self.near_kept[position][2])
        return frozenset(dedupe.shingles(dedupe.words_of(formats.example_text(example))))


def _valid_rows(items: Iterable[Item], spec: DatasetSpec, state: _Curation
                ) -> Iterator[Row]:
    """Normalised, PII-scrubbed rows; bad ones quarantined on the way."""
    pii_kinds = tuple(spec.pii.kinds)
    for item in items:
        state.rows_in += 1
        if isinstance(item, Rejection):
            state.rejected["invalid"].append(item)
            continue
        example = formats.normalise(item.data, spec.kind, spec.format, spec.field_map)
        if isinstance(example, formats.Invalid):
            state.rejected["invalid"].append(Rejection(
                item.file, item.row, example.reason, example.field, example.detail, example.fix,
                item.data))
            continue
        if spec.pii.scrub:
            example, found = pii.scrub_example(example, pii_kinds)
            if found:
                state.pii_counts.update(found)
        stratum = str(item.data.get(spec.split.stratify_by, "")) if spec.split.stratify_by else ""
        yield item.file, item.row, example, stratum


@contextmanager
def _collecting_rarely() -> Iterator[None]:
    """Curation allocates a few small objects per row and keeps most rows (their lines, hashes
    and split keys), so the cycle collector's default young generation (700 allocations) sends
    it over the same survivors again and again: a fifth of the run on generated rows. Nothing
    here builds cycles; garbage is still freed by reference counts as it goes."""
    threshold = gc.get_threshold()
    gc.set_threshold(50_000, *threshold[1:])
    try:
        yield
    finally:
        gc.set_threshold(*threshold)


def curate(items: Iterable[Item], spec: DatasetSpec, counter: TokenCounter | None,
           max_tokens: int | None) -> Curated:
    with counting_on_one_core(), _collecting_rarely(), ThreadPoolExecutor(
            1, thread_name_prefix="token-count") as counting_thread:
        state = _Curation(spec, counter, max_tokens, counting_thread)
        pending = _Pending()
        loop_started = time.monotonic()
        for row in _valid_rows(items, spec, state):
            started = time.monotonic()
            state.add_unless_duplicate(*row, pending)
            state.seconds["dedupe"] += time.monotonic() - started
            if len(pending.rows) >= CHUNK:
                state.settle(pending)
                pending = _Pending()
        if pending.rows:
            state.settle(pending)
        state.finish()
    # what the loop spent outside the duplicate and length stages: reading, normalising, PII
    state.seconds["read_normalise"] = (time.monotonic() - loop_started - state.seconds["dedupe"]
                                       - state.seconds["tokens"])

    started = time.monotonic()
    if spec.kind == "pretrain" and counter is not None:
        for block in _pack(state.documents, counter, spec.block_size):
            state.keep(block, "", spec.block_size)
    elif spec.kind == "pretrain":
        for text in state.documents:
            state.keep({"text": text}, "", None)
    state.seconds["tokens"] += time.monotonic() - started

    started = time.monotonic()
    assigned = splits.assign(state.prompt_keys, spec.split.val, spec.split.test,
                             spec.split.seed, state.strata if spec.split.stratify_by else None)
    out: dict[str, list[str]] = {s: [] for s in splits.SPLITS}
    for line, split in zip(state.lines, assigned, strict=True):
        out[split].append(line)
    state.seconds["split"] += time.monotonic() - started
    rejections = [r for stage in ("invalid", "duplicate", "near_duplicate", "too_long")
                  for r in state.rejected[stage]]
    return Curated(out, rejections, state.rows_in, state.pii_counts, state.lengths,
                   state.truncated, seconds={stage: state.seconds[stage] for stage in (
                       "read_normalise", "dedupe", "tokens", "split")})
