"""Admission: what a request must get past before any work is done for it.

In order: the client address has not failed authentication too often; the key's and the
project's requests per minute (counted before the body is even read, so rejected requests are
limited too); a slot among the key's and the project's requests in flight; and, once the body
is known, a reservation of the most tokens it can use (prompt estimate + n x max_tokens), settled
to the real usage when the answer is done. Every refusal is a 429 with Retry-After (or a 400 for
a request that could never fit), in OpenAI's error format.
"""

from __future__ import annotations

import math
import uuid

from config.gateway import GatewaySettings
from gateway.protocol import GatewayError
from gateway.ratelimit import RateLimiter
from gateway.tenancy import Principal

# The usual ~4 characters per token of BPE vocabularies, plus a chat template's few tokens per
# message. Only the reservation uses it; the settlement uses the engine's own count.
CHARS_PER_TOKEN = 4
TEMPLATE_TOKENS_PER_MESSAGE = 8


def estimate_tokens(text: str, messages: int = 1) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN) + TEMPLATE_TOKENS_PER_MESSAGE * messages


def rate_limited(message: str, wait: float, code: str = "rate_limit_exceeded") -> GatewayError:
    return GatewayError(429, f"{message} Retry after {wait:.0f}s.", "rate_limit_error", code,
                        headers={"Retry-After": str(int(wait))})


class Admission:
    def __init__(self, settings: GatewaySettings, limiter: RateLimiter) -> None:
        self.settings, self.limiter = settings, limiter

    # -- before authentication -----------------------------------------------------------------
    def check_address(self, address: str) -> None:
        wait = self.limiter.over((f"a:{address}", self.settings.auth_failures_per_minute))
        if wait is not None:
            raise rate_limited("Too many failed authentication attempts from this address.",
                               wait, "too_many_auth_failures")

    def failed_authentication(self, address: str) -> None:
        self.limiter.hit([(f"a:{address}", self.settings.auth_failures_per_minute)])

    # -- after authentication ------------------------------------------------------------------
    def count_request(self, p: Principal) -> None:
        wait = self.limiter.hit([(p.key_scope, p.rpm), (p.project_scope, p.quota.rpm)])
        if wait is not None:
            raise rate_limited(f"Rate limit reached for this key ({p.rpm} requests per minute; "
                               f"the project's {p.quota.rpm} across its keys).", wait)

    def enter(self, p: Principal) -> str:
        """Take an in-flight slot; the ticket must be given back with `leave`."""
        ticket = uuid.uuid4().hex
        if not self.limiter.acquire([(p.key_scope, self.settings.key_max_in_flight),
                                     (p.project_scope, p.quota.max_in_flight)], ticket):
            raise rate_limited(f"Too many requests in flight (this key: "
                               f"{self.settings.key_max_in_flight}, the project: "
                               f"{p.quota.max_in_flight}).", 1,
                               "too_many_concurrent_requests")
        return ticket

    def leave(self, p: Principal, ticket: str) -> None:
        self.limiter.release([p.key_scope, p.project_scope], ticket)

    def reserve(self, p: Principal, tokens: int) -> None:
        if tokens > p.tpm:
            raise GatewayError(400, f"This request may use up to {tokens} tokens (prompt + n x "
                                    f"max_tokens per prompt), more than this key's {p.tpm} per "
                                    "minute; lower max_tokens or n.", "invalid_request_error",
                               "request_exceeds_token_limit", "max_tokens")
        wait = self.limiter.reserve([(p.key_scope, p.tpm), (p.project_scope, p.quota.tpm)],
                                    tokens)
        if wait is not None:
            raise rate_limited(f"Token limit reached for this key ({p.tpm} tokens per minute; "
                               f"the project's {p.quota.tpm}); this request needs up to "
                               f"{tokens}.", wait)

    def settle(self, p: Principal, reserved: int, used: int) -> None:
        self.limiter.settle([p.key_scope, p.project_scope], used - reserved)
