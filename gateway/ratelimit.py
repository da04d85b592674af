"""Counters behind admission: requests and tokens per minute, requests in flight.

Every counter has a scope: `k:<key id>` (one key), `p:<project id>` (all keys of a project) or
`a:<client address>` (failed authentications). A request is counted in its key's and its
project's scope at once, so a project's ceiling holds however many keys it spreads load over.

Tokens are reserved before any work (prompt estimate + n x max_tokens, all or nothing across the
scopes) and settled to the real usage afterwards. Windows are fixed clock minutes; a limited
request gets the seconds to the next window as Retry-After.

In memory for one gateway process (the embedded default); Redis when several gateway replicas
must share the counts, with the check-and-add steps in Lua so two gateways cannot both take the
last tokens. In-flight counts in Redis are sorted sets of tickets that expire after
`ticket_ttl_s`, so a gateway that dies mid-request cannot leak a slot for ever.
"""

from __future__ import annotations

import math
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

WINDOW = 60

Limit = tuple[str, int]  # (scope, limit)


class RateLimiter(ABC):
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock

    def _window(self) -> tuple[int, float]:
        now = self.clock()
        window = int(now // WINDOW)
        return window, (window + 1) * WINDOW - now

    def _wait(self) -> float:
        return max(1.0, math.ceil(self._window()[1]))

    def hit(self, limits: Sequence[Limit]) -> float | None:
        """Count one request in every scope; the seconds to wait if any is over its limit."""
        window, _ = self._window()
        counts = self._hit([scope for scope, _ in limits], window)
        if any(count > limit for count, (_, limit) in zip(counts, limits, strict=True)):
            return self._wait()
        return None

    def over(self, limit: Limit) -> float | None:
        """Without counting: the seconds to wait if the scope has reached its limit."""
        scope, most = limit
        return self._wait() if self._requests(scope, self._window()[0]) >= most else None

    def reserve(self, limits: Sequence[Limit], tokens: int) -> float | None:
        """Add `tokens` to every scope if all stay within their limits, else add nothing and
        return the seconds to wait."""
        window, _ = self._window()
        return None if self._reserve(limits, window, tokens) else self._wait()

    def settle(self, scopes: Sequence[str], delta: int) -> None:
        """Correct a reservation by `delta` tokens (negative: less was used)."""
        if delta:
            self._settle(scopes, self._window()[0], delta)

    @abstractmethod
    def _hit(self, scopes: list[str], window: int) -> list[int]: ...

    @abstractmethod
    def _requests(self, scope: str, window: int) -> int: ...

    @abstractmethod
    def _reserve(self, limits: Sequence[Limit], window: int, tokens: int) -> bool: ...

    @abstractmethod
    def _settle(self, scopes: Sequence[str], window: int, delta: int) -> None: ...

    @abstractmethod
    def acquire(self, limits: Sequence[Limit], ticket: str) -> bool:
        """Take one in-flight slot in every scope, or none if any is full."""

    @abstractmethod
    def release(self, scopes: Sequence[str], ticket: str) -> None: ...


class MemoryRateLimiter(RateLimiter):
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        super().__init__(clock)
        self._counts: dict[tuple[str, int], list[int]] = {}  # (scope, window) -> [req, tok]
        self._in_flight: dict[str, set[str]] = {}
        self._lock = threading.Lock()
        self._window_seen = 0

    def _slot(self, scope: str, window: int) -> list[int]:
        if window != self._window_seen:  # a new minute: forget the old ones
            self._counts = {k: v for k, v in self._counts.items() if k[1] >= window}
            self._window_seen = window
        return self._counts.setdefault((scope, window), [0, 0])

    def _hit(self, scopes: list[str], window: int) -> list[int]:
        with self._lock:
            out = []
            for scope in scopes:
                slot = self._slot(scope, window)
                slot[0] += 1
                out.append(slot[0])
            return out

    def _requests(self, scope: str, window: int) -> int:
        with self._lock:
            return self._counts.get((scope, window), [0, 0])[0]

    def _reserve(self, limits: Sequence[Limit], window: int, tokens: int) -> bool:
        with self._lock:
            slots = [self._slot(scope, window) for scope, _ in limits]
            if any(slot[1] + tokens > limit for slot, (_, limit) in zip(slots, limits,
                                                                         strict=True)):
                return False
            for slot in slots:
                slot[1] += tokens
            return True

    def _settle(self, scopes: Sequence[str], window: int, delta: int) -> None:
        with self._lock:
            for scope in scopes:
                self._slot(scope, window)[1] += delta

    def acquire(self, limits: Sequence[Limit], ticket: str) -> bool:
        with self._lock:
            if any(len(self._in_flight.get(scope, ())) >= most for scope, most in limits):
                return False
            for scope, _ in limits:
                self._in_flight.setdefault(scope, set()).add(ticket)
            return True

    def release(self, scopes: Sequence[str], ticket: str) -> None:
        with self._lock:
            for scope in scopes:
                tickets = self._in_flight.get(scope)
                if tickets is not None:
                    tickets.discard(ticket)
                    if not tickets:
                        del self._in_flight[scope]


# KEYS: token counters; ARGV: tokens, ttl, then one limit per key.
_RESERVE = """
local tokens = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  if tonumber(redis.call('GET', key) or '0') + tokens > tonumber(ARGV[i + 2]) then
    return 0
  end
end
for _, key in ipairs(KEYS) do
  redis.call('INCRBY', key, tokens)
  redis.call('EXPIRE', key, tonumber(ARGV[2]))
end
return 1
"""

# KEYS: in-flight sets; ARGV: ticket, now, ttl, then one limit per key.
_ACQUIRE = """
local now, ttl = tonumber(ARGV[2]), tonumber(ARGV[3])
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - ttl)
  if redis.call('ZCARD', key) >= tonumber(ARGV[i + 3]) then
    return 0
  end
end
for _, key in ipairs(KEYS) do
  redis.call('ZADD', key, now, ARGV[1])
  redis.call('EXPIRE', key, ttl)
end
return 1
"""


class RedisRateLimiter(RateLimiter):
    def __init__(self, url: str, clock: Callable[[], float] = time.time,
                 ticket_ttl_s: int = 900) -> None:
        import redis

        super().__init__(clock)
        self.redis = redis.Redis.from_url(url)
        self.redis.ping()
        self.ticket_ttl_s = ticket_ttl_s
        self._reserve_script = self.redis.register_script(_RESERVE)
        self._acquire_script = self.redis.register_script(_ACQUIRE)

    @staticmethod
    def _key(scope: str, window: int, kind: str) -> str:
        return f"gw:rl:{scope}:{window}:{kind}"

    def _hit(self, scopes: list[str], window: int) -> list[int]:
        pipe = self.redis.pipeline()
        for scope in scopes:
            pipe.incr(self._key(scope, window, "req"))
            pipe.expire(self._key(scope, window, "req"), 2 * WINDOW)
        return [int(v) for v in pipe.execute()[::2]]

    def _requests(self, scope: str, window: int) -> int:
        return int(self.redis.get(self._key(scope, window, "req")) or 0)

    def _reserve(self, limits: Sequence[Limit], window: int, tokens: int) -> bool:
        keys = [self._key(scope, window, "tok") for scope, _ in limits]
        return bool(self._reserve_script(keys=keys, args=[tokens, 2 * WINDOW,
                                                          *(most for _, most in limits)]))

    def _settle(self, scopes: Sequence[str], window: int, delta: int) -> None:
        pipe = self.redis.pipeline()
        for scope in scopes:
            pipe.incrby(self._key(scope, window, "tok"), delta)
            pipe.expire(self._key(scope, window, "tok"), 2 * WINDOW)
        pipe.execute()

    def acquire(self, limits: Sequence[Limit], ticket: str) -> bool:
        keys = [f"gw:if:{scope}" for scope, _ in limits]
        return bool(self._acquire_script(keys=keys, args=[
            ticket, self.clock(), self.ticket_ttl_s, *(most for _, most in limits)]))

    def release(self, scopes: Sequence[str], ticket: str) -> None:
        pipe = self.redis.pipeline()
        for scope in scopes:
            pipe.zrem(f"gw:if:{scope}", ticket)
        pipe.execute()


def make_rate_limiter(backend: str) -> RateLimiter:
    if backend == "memory":
        return MemoryRateLimiter()
    if backend.startswith("redis://"):
        return RedisRateLimiter(backend)
    raise ValueError(f"rate_limit_backend must be 'memory' or redis://..., got {backend!r}")
