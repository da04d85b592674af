"""What changed under a folder or an S3 prefix since the last look, as a restart-safe cursor.

The cursor is the `key -> etag` map of the last listing. Comparing listings, not modification
times, avoids the trap of `get_objects(since_last_modified=...)`: S3's LastModified has one-second
resolution, so an object written in the same second as a time-based cursor is missed; and a
deletion has no modification time at all. The newest LastModified is kept for the logs.
"""

from __future__ import annotations

import glob
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from assets.ingest.documents import DOCUMENTS
from assets.ingest.readers import TABULAR
from worker.s3 import objects, split_url


@dataclass(frozen=True)
class Entry:
    key: str
    modified: float
    etag: str


@dataclass(frozen=True)
class Changes:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    listing: dict[str, str] = field(default_factory=dict)
    newest: float = 0.0

    @property
    def any(self) -> bool:
        return bool(self.added or self.updated or self.removed)

    def run_key(self) -> str:
        """Same changes -> same key, so Dagster never launches a run twice for them."""
        parts = [f"+{k}@{self.listing[k]}" for k in self.added + self.updated]
        parts += [f"-{k}" for k in self.removed]
        return hashlib.sha256("\n".join(sorted(parts)).encode()).hexdigest()[:24]

    def cursor(self) -> str:
        return json.dumps({"listing": self.listing, "newest": self.newest}, sort_keys=True)

    def summary(self) -> str:
        return (f"{len(self.added)} added, {len(self.updated)} updated, "
                f"{len(self.removed)} removed")


def listing_digest(entries: list[Entry]) -> str:
    """What an asset records of the files it read, and a sensor without a cursor compares."""
    lines = sorted(f"{e.key}\t{e.etag}" for e in entries)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:24]


def diff(entries: list[Entry], cursor: str | None) -> Changes:
    before: dict[str, str] = json.loads(cursor)["listing"] if cursor else {}
    now = {e.key: e.etag for e in entries}
    return Changes(
        added=sorted(k for k in now if k not in before),
        updated=sorted(k for k in now if k in before and before[k] != now[k]),
        removed=sorted(k for k in before if k not in now),
        listing=now,
        newest=max((e.modified for e in entries), default=0.0),
    )


WATCHED = DOCUMENTS | TABULAR


def list_files(pattern: str, root: Path) -> list[Entry]:
    """Every supported file in a folder (recursively) or matching a glob, relative to `root`;
    size and mtime in nanoseconds stand in for an ETag."""
    base = root / pattern
    paths = base.rglob("*") if base.is_dir() else map(Path, glob.glob(str(base), recursive=True))
    out = []
    for path in sorted(p for p in paths if p.is_file()):
        if path.suffix.lower() not in WATCHED or path.name.startswith("."):
            continue
        stat = path.stat()
        out.append(Entry(str(path), stat.st_mtime, f"{stat.st_size}-{stat.st_mtime_ns}"))
    return out


def list_s3(url: str, endpoint_url: str | None) -> list[Entry]:
    import boto3

    bucket, prefix = split_url(url)
    client = boto3.client("s3", endpoint_url=endpoint_url)
    return [Entry(obj["Key"], obj["LastModified"].timestamp(), obj["ETag"].strip('"'))
            for obj in objects(client, bucket, prefix)
            if Path(obj["Key"]).suffix.lower() in WATCHED]
