"""Per-key rate limits: requests and tokens per minute, fixed one-minute windows.

In memory for one gateway process (the embedded default); Redis when several gateway replicas
must share the counts. A limited request gets 429 with Retry-After = seconds to the next window.
"""

from __future__ import annotations

import math
import threading
import time
from abc import ABC, abstractmethod

WINDOW = 60


class RateLimiter(ABC):
    def __init__(self, clock: callable = time.time) -> None:  # type: ignore[valid-type]
        self.clock = clock

    def _window(self) -> tuple[int, float]:
        now = self.clock()
        window = int(now // WINDOW)
        return window, (window + 1) * WINDOW - now

    def check(self, key_id: int, rpm: int, tpm: int) -> float | None:
        """Count one request; the seconds to wait if it is over a limit, else None."""
        window, remaining = self._window()
        requests, tokens = self._hit(key_id, window)
        if requests > rpm or tokens >= tpm:
            return max(1.0, math.ceil(remaining))
        return None

    def add_tokens(self, key_id: int, tokens: int) -> None:
        if tokens > 0:
            self._add_tokens(key_id, self._window()[0], tokens)

    @abstractmethod
    def _hit(self, key_id: int, window: int) -> tuple[int, int]: ...

    @abstractmethod
    def _add_tokens(self, key_id: int, window: int, tokens: int) -> None: ...


class MemoryRateLimiter(RateLimiter):
    def __init__(self, clock: callable = time.time) -> None:  # type: ignore[valid-type]
        super().__init__(clock)
        self._counts: dict[tuple[int, int], list[int]] = {}
        self._lock = threading.Lock()

    def _hit(self, key_id: int, window: int) -> tuple[int, int]:
        with self._lock:
            for stale in [k for k in self._counts if k[1] < window]:
                del self._counts[stale]
            counts = self._counts.setdefault((key_id, window), [0, 0])
            counts[0] += 1
            return counts[0], counts[1]

    def _add_tokens(self, key_id: int, window: int, tokens: int) -> None:
        with self._lock:
            self._counts.setdefault((key_id, window), [0, 0])[1] += tokens


class RedisRateLimiter(RateLimiter):
    def __init__(self, url: str, clock: callable = time.time) -> None:  # type: ignore[valid-type]
        import redis

        super().__init__(clock)
        self.redis = redis.Redis.from_url(url)
        self.redis.ping()

    def _hit(self, key_id: int, window: int) -> tuple[int, int]:
        pipe = self.redis.pipeline()
        pipe.incr(f"gw:rl:{key_id}:{window}:req")
        pipe.expire(f"gw:rl:{key_id}:{window}:req", 2 * WINDOW)
        pipe.get(f"gw:rl:{key_id}:{window}:tok")
        requests, _, tokens = pipe.execute()
        return int(requests), int(tokens or 0)

    def _add_tokens(self, key_id: int, window: int, tokens: int) -> None:
        pipe = self.redis.pipeline()
        pipe.incrby(f"gw:rl:{key_id}:{window}:tok", tokens)
        pipe.expire(f"gw:rl:{key_id}:{window}:tok", 2 * WINDOW)
        pipe.execute()


def make_rate_limiter(backend: str) -> RateLimiter:
    if backend == "memory":
        return MemoryRateLimiter()
    if backend.startswith("redis://"):
        return RedisRateLimiter(backend)
    raise ValueError(f"rate_limit_backend must be 'memory' or redis://..., got {backend!r}")
