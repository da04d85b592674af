"""The audit log's writer: records are queued by requests and written in batches off the request
path, so a database commit never adds to a caller's latency.

When the database is unreachable, the batch stays queued for the next attempt (nothing is
dropped). When it is reachable but refuses the batch (a value it cannot store), the rows are
retried one by one, once, and a row refused again goes to the dead-letter file (one JSON object
per line, with the database's reason): one bad row never blocks the rows behind it.
Shutdown writes what is left; `drain()` is also the synchronous flush for tests and tools.
Stored completions (gateway/capture.py) ride the same writes, queued as builders: their rows
are made here, off the request path and outside the lock (scrubbing a long chat must not hold up
a transcription's quota count, which takes the lock on the event loop); `after_write` then holds
each project to its bounds, outside the lock too. A row the database refuses twice goes to the
dead-letter file with its text left out (a kept chat's text belongs to the bounds and erasure).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import inspect
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import sessionmaker

from gateway.db import Base

log = logging.getLogger("gateway.audit")

# The database could not be reached: worth retrying the same rows later.
UNREACHABLE = (OperationalError, InterfaceError)


def as_dict(record: Base) -> dict[str, Any]:
    return {"table": record.__tablename__,
            **{c.key: getattr(record, c.key) for c in inspect(record).mapper.column_attrs}}


Later = Callable[[], Base | None]  # a row made when the batch is written (None: nothing)
# what a dead-letter line never holds: a kept chat's text and what people wrote about it
TEXT_LEFT_OUT = {"messages", "choices", "metadata_json", "session", "comment", "correction"}


class AuditWriter:
    def __init__(self, sessions: sessionmaker, dead_letter: str | Path,
                 interval_s: float = 0.25) -> None:
        self.sessions, self.interval_s = sessions, interval_s
        self.dead_letter = Path(dead_letter)
        self.after_write: Callable[[list[Base]], None] | None = None
        self.sweep: Callable[[], None] | None = None  # every sweep_s, beside the writes
        self.sweep_s = 600.0
        self._pending: deque[Base] = deque()
        self._later: deque[Later] = deque()
        self._lock = threading.Lock()  # the queue, as a quota count reads it
        self._draining = threading.Lock()  # one drain at a time
        self._task: asyncio.Task[None] | None = None

    def add(self, record: Base) -> None:
        self._pending.append(record)

    def add_later(self, build: Later) -> None:
        self._later.append(build)

    def counted_audio_seconds(self, project_id: int, day: str,
                              written: Callable[[int, str], float]) -> float:
        """A project's audio seconds on `day`: the rows `written` (a database sum) plus those
        still queued here, read under the lock a drain holds while it commits, so a row is
        counted once whichever side of the commit it is on."""
        with self._lock:
            queued = sum(getattr(r, "audio_seconds", 0.0) or 0.0 for r in self._pending
                         if getattr(r, "project_id", None) == project_id
                         and getattr(r, "day", None) == day)
            return written(project_id, day) + queued

    def drain(self) -> int:
        """Write everything queued now; returns how many records were written. One drain at a
        time: a caller that drains to read its own writes waits for one already under way
        (whose rows it would otherwise not find yet)."""
        with self._draining:
            built = [row for row in (self._built(self._later.popleft())
                                     for _ in range(len(self._later))) if row is not None]
            with self._lock:
                self._pending.extend(built)
                batch = [self._pending.popleft() for _ in range(len(self._pending))]
                if not batch:
                    return 0
                try:
                    with self.sessions.begin() as s:
                        s.add_all(batch)
                except UNREACHABLE:
                    log.exception("audit write of %d records failed; will retry", len(batch))
                    self._pending.extendleft(reversed(batch))
                    raise
                except Exception:
                    log.exception("the database refused a batch of %d audit records; retrying "
                                  "them one by one", len(batch))
                    written = self._one_by_one(batch)
                else:
                    written = len(batch)
            self._written(batch)
            return written

    @staticmethod
    def _built(build: Later) -> Base | None:
        try:
            return build()
        except Exception:
            log.exception("a stored completion could not be made into a row; it is not kept")
            return None

    def _written(self, batch: list[Base]) -> None:
        if self.after_write is not None:
            try:
                self.after_write(batch)
            except Exception:  # the rows are written; the bounds are held on the next batch
                log.exception("after-write hook failed")

    def _one_by_one(self, batch: list[Base]) -> int:
        written = 0
        for i, record in enumerate(batch):
            fresh = type(record)(**{k: v for k, v in as_dict(record).items() if k != "table"
                                    and k != "id"})
            try:
                with self.sessions.begin() as s:
                    s.add(fresh)
                written += 1
            except UNREACHABLE:
                self._pending.extendleft(reversed(batch[i:]))
                raise
            except Exception as exc:
                self._bury(record, exc)
        return written

    def _bury(self, record: Base, exc: Exception) -> None:
        log.error("audit record refused twice; written to %s: %s", self.dead_letter, exc)
        self.dead_letter.parent.mkdir(parents=True, exist_ok=True)
        row = {**as_dict(record), "refused_at": time.time(), "reason": str(exc)[:500]}
        row.pop("id", None)
        for text in TEXT_LEFT_OUT.intersection(row):
            row[text] = f"(left out: {len(str(row[text] or ''))} characters)"
        with self.dead_letter.open("a") as f:
            f.write(json.dumps(row, default=str) + "\n")

    async def _loop(self) -> None:
        swept = time.monotonic()
        while True:
            await asyncio.sleep(self.interval_s)
            with contextlib.suppress(Exception):  # logged in drain(); the batch is kept
                await asyncio.to_thread(self.drain)
            if self.sweep is not None and time.monotonic() - swept > self.sweep_s:
                swept = time.monotonic()
                try:
                    await asyncio.to_thread(self.sweep)
                except Exception:  # the next sweep tries again
                    log.exception("the periodic sweep failed")

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await asyncio.to_thread(self.drain)
