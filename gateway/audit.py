"""The audit log's writer: records are queued by requests and written in batches off the request
path, so a database commit never adds to a caller's latency.

A failed write is logged and the batch stays queued for the next attempt (nothing is dropped);
shutdown writes what is left. `drain()` is also the synchronous flush for tests and tools.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque

from sqlalchemy.orm import sessionmaker

from gateway.db import AuditRecord

log = logging.getLogger("gateway.audit")


class AuditWriter:
    def __init__(self, sessions: sessionmaker, interval_s: float = 0.25) -> None:
        self.sessions, self.interval_s = sessions, interval_s
        self._pending: deque[AuditRecord] = deque()
        self._lock = threading.Lock()
        self._task: asyncio.Task[None] | None = None

    def add(self, record: AuditRecord) -> None:
        self._pending.append(record)

    def drain(self) -> int:
        """Write everything queued now; returns how many records were written."""
        with self._lock:
            batch = [self._pending.popleft() for _ in range(len(self._pending))]
            if not batch:
                return 0
            try:
                with self.sessions.begin() as s:
                    s.add_all(batch)
            except Exception:
                log.exception("audit write of %d records failed; will retry", len(batch))
                self._pending.extendleft(reversed(batch))
                raise
            return len(batch)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            with contextlib.suppress(Exception):  # logged in drain(); the batch is kept
                await asyncio.to_thread(self.drain)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await asyncio.to_thread(self.drain)
