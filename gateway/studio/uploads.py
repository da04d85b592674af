"""A member's data file, from the request body to a curation report, with every bound held
before the work it protects: bytes while streaming, then type, line length, columns and rows
from the file's own structure, and only then curation (the same pipeline the dataset asset runs).

The client's file name is a label: the server names the stored object. Any failure removes the
temporary file, so nothing partial is left behind.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from config.datasets import DatasetSpec
from config.gateway import StudioSettings
from config.studio import STUDIO_PII
from curation.pipeline import Curated, curate
from curation.tokens import TokenCounter
from gateway.protocol import GatewayError
from ingest.problems import InputFileError, Rejection
from ingest.sources import RawRecord, read_file

SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
# What a file that is not text starts with: archives and compressed streams are never read
FOREIGN_MAGIC = {b"PK\x03\x04": "a zip archive", b"\x1f\x8b": "gzip data",
                 b"BZh": "bzip2 data", b"\xfd7zXZ": "xz data", b"7z\xbc\xaf": "a 7z archive",
                 b"PAR1": "a Parquet file", b"%PDF": "a PDF"}
# canonical fields a member maps columns to, per kind (the formats' own field names)
MAPPABLE = {"sft": ("prompt", "completion"), "preference": ("prompt", "chosen", "rejected"),
            "feedback": ("prompt", "completion", "label")}
MAPPED_FORMAT = {"sft": "prompt_completion", "preference": "preference", "feedback": "feedback"}
PREVIEW_ROWS = 5
REPORTED_REJECTIONS = 200


def bad_upload(message: str, code: str, param: str | None = None,
               status: int = 400) -> GatewayError:
    return GatewayError(status, message, "invalid_request_error", code, param)


def suffix_of(label: str) -> str:
    suffix = Path(label).suffix.lower()
    if suffix not in SUFFIXES:
        raise bad_upload(f"'{label}' is not a data file this Studio reads: use "
                         f"{', '.join(SUFFIXES)}.", "unsupported_file_type", "filename")
    return suffix


async def receive(chunks: AsyncIterator[bytes], limit: int, folder: Path, suffix: str) -> Path:
    """The body in a temporary file, refused (and removed) the moment it passes `limit`."""
    fd, name = tempfile.mkstemp(dir=folder, suffix=suffix)
    path = Path(name)
    size = 0
    try:
        with open(fd, "wb") as handle:
            async for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    raise bad_upload(f"The file is larger than this project may upload at once "
                                     f"({limit:,} bytes, counting what is already stored).",
                                     "upload_too_large", status=413)
                handle.write(chunk)
        if size == 0:
            raise bad_upload("The file is empty.", "empty_upload")
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


def check_structure(path: Path, suffix: str, label: str, bounds: StudioSettings) -> int:
    """The file is what its name says and within the row, column and line bounds; returns the
    number of rows it holds (an upper bound for CSV, whose quoted cells may span lines)."""
    if suffix == ".parquet":
        return _check_parquet(path, label, bounds)
    with path.open("rb") as f:
        head = f.read(8)
    for magic, what in FOREIGN_MAGIC.items():
        if head.startswith(magic):
            raise bad_upload(f"'{label}' is {what}, not {suffix[1:].upper()} text.",
                             "content_does_not_match_type", "file")
    rows = 0
    with path.open("rb") as f:
        for line in _lines(f, bounds.max_line_bytes, label):
            if line.strip():
                rows += 1
            if rows > bounds.max_rows + (suffix == ".csv"):
                raise bad_upload(f"'{label}' has more than {bounds.max_rows:,} rows, this "
                                 "project's limit per upload.", "too_many_rows", "file")
    if suffix == ".csv":
        _check_csv_header(path, label, bounds)
    return rows - (suffix == ".csv")


def _check_csv_header(path: Path, label: str, bounds: StudioSettings) -> None:
    """The header as the csv module reads it (a quoted name may span lines): every data row
    costs its width, so the width is bounded before any row is read."""
    import csv

    with path.open(encoding="utf-8-sig", errors="replace", newline="") as f:
        try:
            header = next(csv.reader(f), [])
        except csv.Error as exc:
            raise bad_upload(f"'{label}' has no readable header row ({exc}).",
                             "unreadable_file", "file") from exc
    if len(header) > bounds.max_columns:
        raise bad_upload(f"'{label}' has {len(header):,} columns; at most "
                         f"{bounds.max_columns} are read.", "too_many_columns", "file")


def _lines(f: Any, limit: int, label: str) -> Iterator[bytes]:
    """Lines read at most `limit` bytes at a time: a 1 GB line is refused after `limit`."""
    number = 0
    while True:
        line = f.readline(limit + 1)
        if not line:
            return
        number += 1
        if len(line) > limit and not line.endswith(b"\n"):
            raise bad_upload(f"'{label}' line {number} is longer than {limit:,} bytes.",
                             "line_too_long", "file")
        yield line


def _check_parquet(path: Path, label: str, bounds: StudioSettings) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    with path.open("rb") as f:
        head = f.read(4)
        f.seek(max(0, path.stat().st_size - 4))
        tail = f.read(4)
    if path.stat().st_size < 12 or head != b"PAR1" or tail != b"PAR1":
        raise bad_upload(f"'{label}' is not a Parquet file (no PAR1 marks).",
                         "content_does_not_match_type", "file")
    try:
        meta = pq.ParquetFile(path).metadata
        schema = meta.schema.to_arrow_schema()
    except (pa.ArrowException, OSError) as exc:
        raise bad_upload(f"'{label}' is not a readable Parquet file ({exc}).",
                         "content_does_not_match_type", "file") from exc
    if len(schema) > bounds.max_columns:
        raise bad_upload(f"'{label}' has {len(schema):,} columns; at most "
                         f"{bounds.max_columns} are read.", "too_many_columns", "file")
    deep = [f.name for f in schema if _depth(f.type) > 3]
    if deep:
        raise bad_upload(f"'{label}': column '{deep[0]}' is nested more than 3 levels deep.",
                         "unsupported_schema", "file")
    if meta.num_rows > bounds.max_rows:
        raise bad_upload(f"'{label}' has {meta.num_rows:,} rows; this project's limit per "
                         f"upload is {bounds.max_rows:,}.", "too_many_rows", "file")
    declared = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
    if declared > bounds.max_unpacked_bytes:
        raise too_unpacked(label, declared, bounds)
    # what the file declares may lie: decode it in small batches and count what comes out
    unpacked = 0
    try:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=256):
            unpacked += batch.nbytes
            if unpacked > bounds.max_unpacked_bytes:
                raise too_unpacked(label, unpacked, bounds)
    except (pa.ArrowException, OSError) as exc:
        raise bad_upload(f"'{label}' is not a readable Parquet file ({exc}).",
                         "content_does_not_match_type", "file") from exc
    return meta.num_rows


def too_unpacked(label: str, size: int, bounds: StudioSettings) -> GatewayError:
    return bad_upload(f"'{label}' unpacks to more than {bounds.max_unpacked_bytes:,} bytes "
                      f"({size:,} so far).", "upload_too_large", "file", status=413)


def _depth(kind: Any) -> int:
    children = [kind.field(i).type for i in range(kind.num_fields)] \
        if hasattr(kind, "num_fields") else []
    if hasattr(kind, "value_type"):
        children.append(kind.value_type)
    return 1 + max((_depth(c) for c in children), default=0)


def records(path: Path, label: str, bounds: StudioSettings) -> Iterator[RawRecord | Rejection]:
    """The file's rows, each a RawRecord or a Rejection naming the member's file name, held to
    the row and column bounds as they are read (a JSON file's rows are not its lines, a quoted
    CSV header may span lines): the first row past a bound stops the reading."""
    import csv

    import pyarrow as pa

    try:
        for number, item in enumerate(read_file(path, label), start=1):
            if number > bounds.max_rows:
                raise bad_upload(f"'{label}' has more than {bounds.max_rows:,} rows, this "
                                 "project's limit per upload.", "too_many_rows", "file")
            if isinstance(item, RawRecord) and len(item.data) > bounds.max_columns:
                raise bad_upload(f"'{label}' row {item.row} has {len(item.data):,} columns; at "
                                 f"most {bounds.max_columns} are read.", "too_many_columns",
                                 "file")
            yield item
    except InputFileError as exc:
        raise bad_upload(str(exc), "unreadable_file", "file") from exc
    except (ValueError, RecursionError, csv.Error, pa.ArrowException, OSError) as exc:
        # a number of 5000 digits, JSON nested past Python's stack, a CSV cell past the csv
        # module's limit, a Parquet page that does not decode
        raise bad_upload(f"'{label}' could not be read: {type(exc).__name__}: "
                         f"{str(exc)[:200]}", "unreadable_file", "file") from exc


def curate_upload(path: Path, label: str, kind: str, fmt: str, field_map: dict[str, str],
                  counter: TokenCounter | None, max_tokens: int | None,
                  bounds: StudioSettings) -> dict[str, Any]:
    """The curation report of one upload: what a member reads before training on it."""
    spec = DatasetSpec(kind=kind, sources=[{"path": label}], format=fmt, field_map=field_map,
                       max_tokens=max_tokens, pii=STUDIO_PII)
    curated = curate(records(path, label, bounds), spec, counter, max_tokens)
    return report(curated, label, kind, max_tokens, columns_of(path, label, bounds))


def columns_of(path: Path, label: str, bounds: StudioSettings) -> list[str]:
    """The first row's columns, for the mapping step (JSON rows: their keys)."""
    for item in records(path, label, bounds):
        if isinstance(item, RawRecord):
            return [str(c) for c in item.data][:200]
    return []


def report(curated: Curated, label: str, kind: str, max_tokens: int | None,
           columns: list[str]) -> dict[str, Any]:
    reasons = dict(curated.reasons)
    unknown = reasons.get("unknown_format", 0)
    kept = {split: len(lines) for split, lines in curated.lines.items()}
    return {
        "file": label,
        "kind": kind,
        "rows_in": curated.rows_in,
        "rows_kept": sum(kept.values()),
        "splits": kept,
        "quarantined": len(curated.rejections),
        "reasons": reasons,
        "rejections": [{"file": r.file, "row": r.row, "field": r.field, "reason": r.reason,
                        "detail": r.detail, "fix": r.fix}
                       for r in curated.rejections[:REPORTED_REJECTIONS]],
        "pii_scrubbed": dict(curated.pii_counts),
        "duplicates": reasons.get("duplicate", 0) + reasons.get("near_duplicate", 0),
        "token_histogram": histogram(curated.lengths, max_tokens),
        "preview": [json.loads(line) for line in curated.lines["train"][:PREVIEW_ROWS]],
        "columns": columns,
        "needs_mapping": bool(curated.rows_in) and unknown * 2 >= curated.rows_in,
        "mappable": list(MAPPABLE.get(kind, ())),
    }


def histogram(lengths: list[int], max_tokens: int | None, bins: int = 12) -> dict[str, Any]:
    """Tokens per example in equal bins up to the longest (the page draws the bars)."""
    if not lengths:
        return {"edges": [], "counts": [], "max_tokens": max_tokens}
    top = max(lengths)
    width = max(1, -(-top // bins))
    counts = [0] * bins
    for n in lengths:
        counts[min(bins - 1, n // width)] += 1
    return {"edges": [i * width for i in range(bins + 1)], "counts": counts,
            "max_tokens": max_tokens}


def mapping_for(kind: str, mapping: dict[str, str], columns: list[str]) -> tuple[str, dict]:
    """The format and field map a member's column mapping means, checked against the file."""
    wanted = MAPPABLE.get(kind)
    if wanted is None:
        raise bad_upload(f"kind '{kind}' has no column mapping.", "invalid_request", "kind")
    unknown = sorted(set(mapping) - set(wanted))
    if unknown:
        raise bad_upload(f"'{unknown[0]}' is not a field of {kind} data: map "
                         f"{', '.join(wanted)}.", "invalid_mapping", "mapping")
    absent = [c for c in mapping.values() if c not in columns]
    if absent:
        raise bad_upload(f"The file has no column '{absent[0][:100]}'.", "invalid_mapping",
                         "mapping")
    missing = [f for f in wanted if f not in mapping]
    if missing:
        raise bad_upload(f"Map a column to '{missing[0]}' too.", "invalid_mapping", "mapping")
    return MAPPED_FORMAT[kind], dict(mapping)
