"""Records out of JSONL / JSON / CSV / Parquet files, each with its file and row number.

A broken row becomes a Rejection (quarantined, the rest is read); a file that is not what its
name says (binary, truncated, not UTF-8, empty) raises InputFileError naming file and problem.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ingest.problems import InputFileError, Rejection

TABULAR = {".jsonl", ".json", ".csv", ".parquet"}
Record = tuple[int, dict[str, Any]]


def _text(path: Path, name: str) -> str:
    raw = path.read_bytes()
    if not raw.strip():
        raise InputFileError(name, "the file is empty", "remove it or export the data again")
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise InputFileError(name, "the file is UTF-16 encoded", "re-save it as UTF-8")
    if b"\x00" in raw[:8192]:
        raise InputFileError(name, f"binary content, not {path.suffix[1:].upper()} text",
                             "check the file extension and the export step")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        # Mostly-valid text with a few bad lines is handled per line by the JSONL reader.
        if path.suffix == ".jsonl":
            return ""
        raise InputFileError(name, f"not valid UTF-8 (byte {exc.start}: {exc.reason})",
                             "re-save the file as UTF-8") from exc


def read_jsonl(path: Path, name: str) -> Iterator[Record | Rejection]:
    text = _text(path, name)
    lines = text.splitlines() if text else path.read_bytes().splitlines()
    for number, line in enumerate(lines, start=1):
        if isinstance(line, bytes):
            try:
                line = line.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield Rejection(name, number, "invalid_utf8", None,
                                f"byte {exc.start} is not UTF-8 ({exc.reason})",
                                "re-save the file as UTF-8", line)
                continue
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            yield Rejection(name, number, "invalid_json", None,
                            f"{exc.msg} at column {exc.colno}",
                            "make every line one complete JSON object", line)
            continue
        if not isinstance(value, dict):
            yield Rejection(name, number, "not_an_object", None,
                            f"line is a JSON {type(value).__name__}, not an object",
                            "make every line a JSON object of fields", line)
            continue
        yield number, value


def read_json(path: Path, name: str) -> Iterator[Record | Rejection]:
    text = _text(path, name)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputFileError(name, f"not valid JSON: {exc.msg} at line {exc.lineno} column "
                             f"{exc.colno}", "fix the JSON, or use .jsonl for one row per line"
                             ) from exc
    if isinstance(value, dict) and isinstance(value.get("data"), list):
        value = value["data"]
    if not isinstance(value, list):
        raise InputFileError(name, "a .json dataset must be a list of objects (or {\"data\": "
                             "[...]})", "wrap the rows in a list")
    for number, item in enumerate(value, start=1):
        if isinstance(item, dict):
            yield number, item
        else:
            yield Rejection(name, number, "not_an_object", None,
                            f"element is a JSON {type(item).__name__}, not an object",
                            "make every element an object of fields", item)


def read_csv(path: Path, name: str) -> Iterator[Record | Rejection]:
    reader = csv.DictReader(io.StringIO(_text(path, name), newline=""))
    if not reader.fieldnames:
        raise InputFileError(name, "no header row", "put the column names on the first line")
    for record in reader:
        line = reader.line_num
        if None in record:  # more cells than header columns
            yield Rejection(name, line, "extra_columns", None,
                            f"{len(record[None])} more cell(s) than header columns",  # type: ignore[index]
                            "quote cells that contain commas", record)
            continue
        yield line, {k: v for k, v in record.items() if v is not None}


def read_parquet(path: Path, name: str) -> Iterator[Record | Rejection]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if path.stat().st_size == 0:
        raise InputFileError(name, "the file is empty", "remove it or export the data again")
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputFileError(name, f"not a readable Parquet file ({exc})",
                             "the file is truncated or not Parquet; export it again") from exc
    yield from enumerate(table.to_pylist(), start=1)


READERS = {".jsonl": read_jsonl, ".json": read_json, ".csv": read_csv, ".parquet": read_parquet}


def read_records(path: Path, name: str) -> Iterator[Record | Rejection]:
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise InputFileError(name, f"unsupported file type {path.suffix!r}",
                             f"use one of {', '.join(sorted(READERS))}")
    yield from reader(path, name)
