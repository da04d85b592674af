"""The vLLM replicas behind the gateway, and which models each one serves right now.

Routing is adapter-aware: a request goes to a replica that lists its model in /v1/models (fewest
requests in flight first); a connection failure or 5xx moves on to the next such replica.
Listings are refreshed in the background, so requests never queue behind a probe of a busy
replica, and a probe that merely times out keeps what the replica was last seen serving: a
saturated engine answers slowly but has not lost its adapters.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httpx


@dataclass
class Replica:
    url: str
    models: set[str] = field(default_factory=set)
    base_model: str | None = None
    healthy: bool = False
    in_flight: int = 0
    checked_at: float = 0.0


class NoReplica(Exception):
    pass


class ReplicaPool:
    def __init__(self, urls: list[str], refresh_seconds: float = 10.0,
                 timeout: float = 300.0) -> None:
        self.replicas = [Replica(u.rstrip("/")) for u in urls]
        self.refresh_seconds = refresh_seconds
        self.client = httpx.AsyncClient(timeout=httpx.Timeout(timeout, connect=5.0))
        self._lock = asyncio.Lock()
        self._refreshed = 0.0
        self._background: asyncio.Task[None] | None = None

    async def refresh(self, force: bool = False) -> None:
        """Probe now when forced or never probed; otherwise start a background probe once the
        listing is older than refresh_seconds and route on the current one meanwhile."""
        if force or not self._refreshed:
            asked = time.monotonic()
            async with self._lock:
                if self._refreshed < asked:  # nobody probed while this one waited
                    await self._probe_all()
        elif (time.monotonic() - self._refreshed >= self.refresh_seconds
              and (self._background is None or self._background.done())):
            self._background = asyncio.create_task(self._probe_all())

    async def _probe_all(self) -> None:
        await asyncio.gather(*(self._probe(r) for r in self.replicas))
        self._refreshed = time.monotonic()

    async def _probe(self, replica: Replica) -> None:
        try:
            response = await self.client.get(f"{replica.url}/v1/models", timeout=5)
            response.raise_for_status()
            data = response.json()["data"]
            replica.models = {m["id"] for m in data}
            replica.base_model = next((m["id"] for m in data if not m.get("parent")), None)
            replica.healthy = True
        except httpx.TimeoutException:
            pass  # busy, not gone: keep the last listing; a failing request marks it unhealthy
        except (httpx.HTTPError, KeyError, ValueError):
            replica.healthy, replica.models = False, set()
        replica.checked_at = time.time()

    async def served(self, expecting: str | None = None) -> dict[str, list[str]]:
        """Which replicas serve which model. A model named in `expecting` that the listing
        lacks (an adapter hot-loaded since the last probe) gets one fresh look first, at most
        once a second, so a new adapter is callable at once and unknown names cannot make the
        gateway probe its replicas on every request."""
        await self.refresh()
        if (expecting is not None and not any(expecting in r.models for r in self.replicas)
                and time.monotonic() - self._refreshed >= 1.0):
            await self.refresh(force=True)
        table: dict[str, list[str]] = defaultdict(list)
        for r in self.replicas:
            for m in r.models:
                table[m].append(r.url)
        return dict(table)

    async def base_model_of(self, model: str) -> str | None:
        await self.refresh()
        return next((r.base_model for r in self.replicas if model in r.models), None)

    def candidates(self, model: str) -> list[Replica]:
        return sorted((r for r in self.replicas if r.healthy and model in r.models),
                      key=lambda r: r.in_flight)

    @asynccontextmanager
    async def _using(self, replica: Replica) -> AsyncIterator[None]:
        replica.in_flight += 1
        try:
            yield
        finally:
            replica.in_flight -= 1

    async def post(self, model: str, path: str, body: dict) -> tuple[httpx.Response, str]:
        """Non-streaming request with failover; returns the response and the replica used."""
        await self.refresh()
        last: Exception | None = None
        for replica in self.candidates(model):
            try:
                async with self._using(replica):
                    response = await self.client.post(f"{replica.url}{path}", json=body)
                if response.status_code < 500:
                    return response, replica.url
                last = NoReplica(f"{replica.url} answered {response.status_code}")
            except httpx.TransportError as exc:
                last = exc
            replica.healthy = False  # re-probed at the next refresh
        raise NoReplica(f"no replica could serve {model!r}: {last}")

    @asynccontextmanager
    async def stream(self, model: str, path: str, body: dict
                     ) -> AsyncIterator[tuple[httpx.Response, str]]:
        """Streaming request; failover happens only before the first byte is relayed."""
        await self.refresh()
        last: Exception | None = None
        for replica in self.candidates(model):
            try:
                async with self._using(replica), self.client.stream(
                        "POST", f"{replica.url}{path}", json=body) as response:
                    if response.status_code >= 500:
                        last = NoReplica(f"{replica.url} answered {response.status_code}")
                        replica.healthy = False
                        continue
                    yield response, replica.url
                    return
            except httpx.TransportError as exc:
                last = exc
                replica.healthy = False
        raise NoReplica(f"no replica could serve {model!r}: {last}")

    async def close(self) -> None:
        if self._background is not None:
            self._background.cancel()
        await self.client.aclose()
