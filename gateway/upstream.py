"""The vLLM replicas behind the gateway, and which models each one serves right now.

Routing is adapter-aware: a request goes to a replica that lists its model in /v1/models (one
that serves it as a plain model first: a hot adapter merged into its base; then fewest requests
in flight). A request moves on to the next such replica only when it provably
never ran: the connection failed, or the replica answered 503. A read timeout or a connection
lost mid-answer may have generated tokens, so it is not replayed; a timeout says nothing about
the replica's health either (one slow request must not take it out of rotation for everyone).
Listings are refreshed in the background, so requests never queue behind a probe of a busy
replica, and a probe that merely times out keeps what the replica was last seen serving: a
saturated engine answers slowly but has not lost its adapters. The listing also gives each
engine's context window (`max_model_len`), which RAG fits its passages into (gateway/rag.py).

Which replicas exist comes from the deployments' materializations, published in the object store
(assets/deployments.py), read again at each refresh: a replica a deployment added is routed to,
one it removed is dropped, without a restart. A replica also counts as serving what its
deployment declares: an adapter it has not loaded yet is pulled by its LoRA resolver on the
first request (replica/resolver.py). `gateway.upstreams` pins a fixed list instead.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

from store.keys import DEPLOYMENTS
from store.reader import ArtifactReader

log = logging.getLogger("gateway")


@dataclass
class Replica:
    url: str
    models: set[str] = field(default_factory=set)
    declared: set[str] = field(default_factory=set)  # by its deployment, loaded or not
    base_model: str | None = None
    max_model_len: int | None = None  # the engine's context window, shared by its adapters
    healthy: bool = False
    in_flight: int = 0
    checked_at: float = 0.0


class NoReplica(Exception):
    pass


class PublishedReplicas:
    """The replicas the deployments published (`deployments/*.json` in the object store), with
    the models each declares."""

    def __init__(self, reader: ArtifactReader) -> None:
        self.reader = reader

    def __call__(self) -> dict[str, set[str]]:
        found: dict[str, set[str]] = defaultdict(set)
        for key in self.reader.list(DEPLOYMENTS):
            if not key.endswith(".json"):
                continue
            try:
                replicas = self.reader.read_json(key)["replicas"]
                for replica in replicas:
                    found[replica["url"].rstrip("/")] |= set(replica["models"])
            except (ValueError, KeyError, TypeError) as exc:
                log.error("ignoring %s/%s: not a deployment's published replicas (%s)",
                          self.reader.url, key, exc)
        return dict(found)


class UpstreamTimeout(Exception):
    """The replica accepted the request but did not answer in time."""


class UpstreamFailed(Exception):
    """The replica accepted the request, then the connection failed."""


# The request never reached the engine: safe to send it to another replica.
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


@dataclass
class UpstreamStream:
    """An open streamed answer; whoever holds it must `aclose()` it."""

    response: httpx.Response
    replica: Replica
    closed: bool = False

    async def aclose(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            await self.response.aclose()
        finally:
            self.replica.in_flight -= 1


class ReplicaPool:
    def __init__(self, urls: list[str], refresh_seconds: float = 10.0,
                 timeout: float = 300.0, api_key: str | None = None,
                 transport: httpx.AsyncBaseTransport | None = None,
                 directory: Callable[[], dict[str, set[str]]] | None = None) -> None:
        """`urls` fixed, or `directory` (e.g. PublishedReplicas) read at every refresh."""
        self.replicas = [Replica(u.rstrip("/")) for u in urls]
        self.directory = directory
        self.refresh_seconds = refresh_seconds
        # vLLM started with --api-key refuses callers without it (resources/vllm_launch.py)
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.AsyncClient(timeout=httpx.Timeout(timeout, connect=5.0),
                                        headers=headers, transport=transport)
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
        if self.directory is not None:
            self._follow(await asyncio.to_thread(self.directory))
        await asyncio.gather(*(self._probe(r) for r in self.replicas))
        self._refreshed = time.monotonic()

    def _follow(self, published: dict[str, set[str]]) -> None:
        """Take the published replicas: new ones join, removed ones leave (requests already
        running on one finish), the rest keep their counters."""
        known = {r.url: r for r in self.replicas}
        for url in known.keys() - published.keys():
            log.info("replica %s was removed by its deployment; no longer routed to", url)
        for url in published.keys() - known.keys():
            log.info("replica %s was published by a deployment; routing to it", url)
        self.replicas = [known.get(url) or Replica(url) for url in sorted(published)]
        for replica in self.replicas:
            replica.declared = published[replica.url]

    async def _probe(self, replica: Replica) -> None:
        try:
            response = await self.client.get(f"{replica.url}/v1/models", timeout=5)
            response.raise_for_status()
            data = response.json()["data"]
            replica.models = {m["id"] for m in data} | replica.declared
            replica.base_model = next((m["id"] for m in data if not m.get("parent")), None)
            # vLLM lists the window on its base model only; its adapters run in the same engine
            windows = [int(m["max_model_len"]) for m in data if m.get("max_model_len")]
            replica.max_model_len = min(windows, default=None)
            replica.healthy = True
        except httpx.TimeoutException:
            pass  # busy, not gone: keep the last listing; a failing request marks it unhealthy
        except (httpx.HTTPError, KeyError, ValueError, TypeError):
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

    def candidates(self, model: str) -> list[Replica]:
        """Healthy replicas serving `model`: first those serving it as their own model (a hot
        adapter merged into its base, assets/hot_adapters.py: no LoRA cost), then by fewest
        requests in flight."""
        return sorted((r for r in self.replicas if r.healthy and model in r.models),
                      key=lambda r: (r.base_model != model, r.in_flight))

    @asynccontextmanager
    async def _using(self, replica: Replica) -> AsyncIterator[None]:
        replica.in_flight += 1
        try:
            yield
        finally:
            replica.in_flight -= 1

    def context_window(self, model: str) -> int | None:
        """The smallest context window (prompt + reply tokens) among the healthy replicas that
        serve `model`, as listed at the last look: a request may land on any of them. None when
        none says (an engine that is not vLLM)."""
        return min((r.max_model_len for r in self.candidates(model) if r.max_model_len),
                   default=None)

    def serves(self, model: str) -> bool:
        """Whether any replica listed `model` at the last look (no probe)."""
        return any(model in r.models for r in self.replicas)

    async def post(self, model: str, path: str, body: dict) -> tuple[httpx.Response, str]:
        """Non-streaming request; returns the response and the replica used."""
        return await self._post(model, path, json=body)

    async def post_form(self, model: str, path: str, data: dict[str, str],
                        files: dict[str, tuple[str, bytes, str]]) -> tuple[httpx.Response, str]:
        """A multipart request (a recording to transcribe); as `post`."""
        return await self._post(model, path, data=data, files=files)

    async def _post(self, model: str, path: str, **content: Any) -> tuple[httpx.Response, str]:
        await self.refresh()
        last: Exception | None = None
        for replica in self.candidates(model):
            async with self._using(replica):
                try:
                    response = await self.client.post(f"{replica.url}{path}", **content)
                except NOT_SENT as exc:
                    last, replica.healthy = exc, False  # re-probed at the next refresh
                    continue
                except httpx.TimeoutException as exc:
                    raise UpstreamTimeout(f"{replica.url} did not answer in time") from exc
                except httpx.TransportError as exc:
                    replica.healthy = False
                    raise UpstreamFailed(f"{replica.url}: {exc}") from exc
            if response.status_code != 503:
                return response, replica.url
            last = NoReplica(f"{replica.url} answered 503")
        raise NoReplica(f"no replica could serve {model!r}: {last}")

    async def open_stream(self, model: str, path: str, body: dict) -> UpstreamStream:
        """Start a streamed request and return once the replica has answered with its status
        (so a 4xx is relayed as a 4xx, not as an error event inside a 200)."""
        await self.refresh()
        last: Exception | None = None
        for replica in self.candidates(model):
            request = self.client.build_request("POST", f"{replica.url}{path}", json=body)
            replica.in_flight += 1
            try:
                response = await self.client.send(request, stream=True)
            except NOT_SENT as exc:
                replica.in_flight -= 1
                last, replica.healthy = exc, False
                continue
            except httpx.TimeoutException as exc:
                replica.in_flight -= 1
                raise UpstreamTimeout(f"{replica.url} did not answer in time") from exc
            except httpx.TransportError as exc:
                replica.in_flight -= 1
                replica.healthy = False
                raise UpstreamFailed(f"{replica.url}: {exc}") from exc
            stream = UpstreamStream(response, replica)
            if response.status_code != 503:
                return stream
            await stream.aclose()
            last = NoReplica(f"{replica.url} answered 503")
        raise NoReplica(f"no replica could serve {model!r}: {last}")

    async def close(self) -> None:
        if self._background is not None:
            self._background.cancel()
        await self.client.aclose()
