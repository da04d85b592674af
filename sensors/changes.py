"""What changed under a folder or an S3 prefix since the last look, as a restart-safe cursor.

The cursor is the `key -> etag` map of the last listing. Comparing listings, not modification
times, avoids the trap of `get_objects(since_last_modified=...)`: S3's LastModified has one-second
resolution, so an object written in the same second as a time-based cursor is missed; and a
deletion has no modification time at all. The newest LastModified is kept for the logs.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from ingest.listings import Entry


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
