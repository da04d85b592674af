"""What the gateway does with a request, without HTTP: authorise, limit, route, account, audit.

Every request ends in exactly one audit record (success or error), queued once the answer is
known and written in batches (gateway/audit.py); token usage feeds the rate limiter and the metrics.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import sessionmaker

from gateway.audit import AuditWriter
from gateway.db import AuditRecord
from gateway.metrics import GatewayMetrics
from gateway.protocol import (
    MODEL_NAME,
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    GatewayError,
    Sampling,
    model_not_found,
)
from gateway.rag import Retriever, augment, citations, collection_not_found, question_of
from gateway.ratelimit import RateLimiter
from gateway.settings import GatewaySettings
from gateway.tenancy import Principal, Tenancy
from gateway.upstream import NoReplica, ReplicaPool
from resources.embeddings import llama_index_embedding, tokenizer

VALID_MODEL_NAME = re.compile(MODEL_NAME)


@dataclass
class Outcome:
    """What one request did, filled in as it goes and written to the audit log at the end."""

    route: str
    principal: Principal | None = None
    model: str | None = None
    status: int = 200
    error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft_ms: float | None = None
    replica: str | None = None
    prompt_text: str | None = None
    citations: list[dict[str, Any]] | None = None
    started: float = field(default_factory=time.perf_counter)


class Gateway:
    def __init__(self, settings: GatewaySettings, tenancy: Tenancy, sessions: sessionmaker,
                 pool: ReplicaPool, limiter: RateLimiter, metrics: GatewayMetrics,
                 retriever: Retriever, audit: AuditWriter) -> None:
        self.settings, self.tenancy, self.sessions = settings, tenancy, sessions
        self.pool, self.limiter, self.metrics = pool, limiter, metrics
        self.retriever, self.audit = retriever, audit

    # -- identity and access ----------------------------------------------------------------
    def authenticate(self, authorization: str | None, outcome: Outcome) -> Principal:
        if not authorization or not authorization.startswith("Bearer "):
            raise GatewayError(401, "Missing API key: send 'Authorization: Bearer <key>'.",
                               "authentication_error", "missing_api_key")
        principal = self.tenancy.authenticate(authorization.removeprefix("Bearer ").strip())
        if principal is None:
            raise GatewayError(401, "Invalid or revoked API key.", "authentication_error",
                               "invalid_api_key")
        outcome.principal = principal
        return principal

    async def visible_models(self, principal: Principal) -> list[str]:
        served = await self.pool.served()
        granted = self.tenancy.granted(principal.project_id)
        names = {m for m in served if m in granted}
        if self.settings.embedding_model_name in granted:
            names.add(self.settings.embedding_model_name)
        return sorted(names)

    async def authorise_model(self, principal: Principal, model: str) -> None:
        if not VALID_MODEL_NAME.match(model):
            raise model_not_found(model)
        if model not in self.tenancy.granted(principal.project_id):
            raise model_not_found(model)
        if (model != self.settings.embedding_model_name
                and model not in await self.pool.served(expecting=model)):
            raise model_not_found(model)

    def admit(self, principal: Principal, write: bool = True) -> None:
        if write and not principal.can_infer:
            raise GatewayError(403, f"Role '{principal.role}' may list models and read usage "
                                    "but not run inference.", "permission_error",
                               "insufficient_role")
        wait = self.limiter.check(principal.key_id, principal.rpm, principal.tpm)
        if wait is not None:
            raise GatewayError(429, f"Rate limit reached for this key ({principal.rpm} requests "
                                    f"or {principal.tpm} tokens per minute). Retry after "
                                    f"{wait:.0f}s.", "rate_limit_error", "rate_limit_exceeded",
                               headers={"Retry-After": str(int(wait))})

    def check_limits(self, prompt_chars: int, sampling: Sampling | None = None,
                     messages: int = 0) -> None:
        limits = self.settings.limits
        if messages > limits.max_messages:
            raise GatewayError(400, f"At most {limits.max_messages} messages per request.",
                               "invalid_request_error", "too_many_messages", "messages")
        if prompt_chars > limits.max_prompt_chars:
            raise GatewayError(400, f"The prompt has {prompt_chars} characters; the limit is "
                                    f"{limits.max_prompt_chars}.", "invalid_request_error",
                               "prompt_too_long", "messages")
        if sampling is None:
            return
        for param in ("max_tokens", "min_tokens"):
            value = getattr(sampling, param)
            if value is not None and value > limits.max_tokens:
                raise GatewayError(400, f"{param} may be at most {limits.max_tokens}.",
                                   "invalid_request_error", f"{param}_too_large", param)
        if sampling.n > limits.max_n:
            raise GatewayError(400, f"n may be at most {limits.max_n}.",
                               "invalid_request_error", "n_too_large", "n")

    # -- inference ----------------------------------------------------------------------------
    def _upstream_body(self, request: ChatCompletionRequest | CompletionRequest) -> dict:
        body = request.model_dump(exclude_none=True, exclude={"compare_with", "rag"})
        body.setdefault("max_tokens", max(min(256, self.settings.limits.max_tokens),
                                          request.min_tokens or 0))
        if request.stream:
            body["stream_options"] = {"include_usage": True}
        return body

    async def prepare(self, principal: Principal, request: ChatCompletionRequest |
                      CompletionRequest, outcome: Outcome) -> dict:
        outcome.model = request.model
        await self.authorise_model(principal, request.model)
        if isinstance(request, ChatCompletionRequest):
            text = "\n".join(m.content for m in request.messages)
            self.check_limits(len(text), request, len(request.messages))
            if request.compare_with:
                await self.authorise_model(principal, request.compare_with)
        else:
            prompts = [request.prompt] if isinstance(request.prompt, str) else request.prompt
            text = "\n".join(prompts)
            self.check_limits(len(text), request)
        self.admit(principal)
        if principal.log_prompts:
            outcome.prompt_text = text
        if isinstance(request, ChatCompletionRequest) and request.rag:
            request = await self.retrieve(principal, request, outcome)
        return self._upstream_body(request)

    async def retrieve(self, principal: Principal, request: ChatCompletionRequest,
                       outcome: Outcome) -> ChatCompletionRequest:
        """Search a collection the project may read and put what was found in the prompt."""
        assert request.rag is not None
        if request.rag.collection not in self.tenancy.granted(principal.project_id,
                                                              "collection"):
            raise collection_not_found(request.rag.collection)
        chunks = await asyncio.to_thread(self.retriever.search, request.rag,
                                         question_of(request.messages))
        outcome.citations = citations(chunks)
        return request.model_copy(update={"messages": augment(request.messages, chunks)})

    async def complete(self, path: str, body: dict, outcome: Outcome) -> dict:
        try:
            response, replica = await self.pool.post(body["model"], path, body)
        except NoReplica as exc:
            raise GatewayError(503, f"No replica is serving '{body['model']}' right now.",
                               "server_error", "upstream_unavailable") from exc
        outcome.replica = replica
        if response.status_code != 200:
            raise GatewayError(response.status_code if response.status_code < 500 else 502,
                               _upstream_message(response.text), "invalid_request_error"
                               if response.status_code < 500 else "server_error",
                               "upstream_error")
        data = response.json()
        usage = data.get("usage") or {}
        outcome.prompt_tokens += usage.get("prompt_tokens", 0)
        outcome.completion_tokens += usage.get("completion_tokens", 0)
        return data

    async def chat(self, request: ChatCompletionRequest, principal: Principal,
                   outcome: Outcome) -> dict:
        body = await self.prepare(principal, request, outcome)
        data = await self.complete("/v1/chat/completions", body, outcome)
        if outcome.citations is not None:
            data["citations"] = outcome.citations
        if request.compare_with:
            other = await self.complete("/v1/chat/completions",
                                        {**body, "model": request.compare_with}, outcome)
            data["comparison"] = [{"model": other["model"], "choices": other["choices"],
                                   "usage": other.get("usage")}]
        return data

    async def completions(self, request: CompletionRequest, principal: Principal,
                          outcome: Outcome) -> dict:
        body = await self.prepare(principal, request, outcome)
        return await self.complete("/v1/completions", body, outcome)

    async def stream(self, path: str, body: dict, client_wants_usage: bool, outcome: Outcome
                     ) -> AsyncIterator[bytes]:
        """Relay server-sent events, taking usage and timing from them on the way."""
        first_token_at = None
        try:
            async with self.pool.stream(body["model"], path, body) as (response, replica):
                outcome.replica = replica
                if response.status_code != 200:
                    text = (await response.aread()).decode(errors="replace")
                    outcome.status, outcome.error = response.status_code, "upstream_error"
                    error = GatewayError(response.status_code, _upstream_message(text),
                                         "invalid_request_error", "upstream_error")
                    yield f"data: {json.dumps(error.body())}\n\ndata: [DONE]\n\n".encode()
                    return
                async for line in response.aiter_lines():
                    if not line.startswith("data: "):
                        continue
                    payload = line[6:]
                    if payload != "[DONE]":
                        chunk = json.loads(payload)
                        if chunk.get("usage"):
                            outcome.prompt_tokens = chunk["usage"]["prompt_tokens"]
                            outcome.completion_tokens = chunk["usage"]["completion_tokens"]
                            if not chunk.get("choices") and not client_wants_usage:
                                continue
                            if not client_wants_usage:
                                chunk.pop("usage")
                                payload = json.dumps(chunk)
                        if first_token_at is None and chunk.get("choices"):
                            if outcome.citations is not None:
                                chunk["citations"] = outcome.citations
                                payload = json.dumps(chunk)
                            first_token_at = time.perf_counter()
                            outcome.ttft_ms = (first_token_at - outcome.started) * 1000
                    yield f"data: {payload}\n\n".encode()
        except NoReplica:
            outcome.status, outcome.error = 503, "upstream_unavailable"
            error = GatewayError(503, f"No replica is serving '{body['model']}' right now.",
                                 "server_error", "upstream_unavailable")
            yield f"data: {json.dumps(error.body())}\n\ndata: [DONE]\n\n".encode()
        finally:
            await asyncio.shield(self.finish(outcome))

    # -- embeddings ---------------------------------------------------------------------------
    async def embeddings(self, request: EmbeddingRequest, principal: Principal,
                         outcome: Outcome) -> dict:
        outcome.model = request.model
        if request.model != self.settings.embedding_model_name:
            raise model_not_found(request.model)
        await self.authorise_model(principal, request.model)
        inputs = [request.input] if isinstance(request.input, str) else request.input
        if len(inputs) > self.settings.limits.max_embedding_inputs:
            raise GatewayError(400, f"At most {self.settings.limits.max_embedding_inputs} "
                                    "inputs per request.", "invalid_request_error",
                               "too_many_inputs", "input")
        self.check_limits(sum(len(i) for i in inputs))
        self.admit(principal)
        model = await asyncio.to_thread(self._embedding_model)
        vectors, tokens = await asyncio.to_thread(self._embed, model, inputs)
        outcome.prompt_tokens = tokens
        as_base64 = request.encoding_format == "base64"  # the openai SDK's default
        return {"object": "list", "model": request.model, "usage": {
            "prompt_tokens": tokens, "total_tokens": tokens},
            "data": [{"object": "embedding", "index": i,
                      "embedding": base64.b64encode(v.astype("<f4").tobytes()).decode()
                      if as_base64 else v.tolist()}
                     for i, v in enumerate(vectors)]}

    def _embedding_model(self) -> Any:
        return llama_index_embedding(self.settings.embedding_model)

    def _embed(self, model: Any, inputs: list[str]) -> tuple[Any, int]:
        import numpy as np

        counter = tokenizer(self.settings.embedding_model)
        tokens = sum(len(ids) for ids in counter(inputs)["input_ids"])
        return np.asarray(model.get_text_embedding_batch(inputs), dtype=np.float32), tokens

    # -- accounting ---------------------------------------------------------------------------
    async def finish(self, outcome: Outcome) -> None:
        latency = time.perf_counter() - outcome.started
        model = outcome.model or "-"
        p = outcome.principal
        if p is not None:
            self.limiter.add_tokens(p.key_id, outcome.prompt_tokens + outcome.completion_tokens)
        self.metrics.requests.labels(outcome.route, model, str(outcome.status)).inc()
        self.metrics.latency.labels(outcome.route, model).observe(latency)
        self.metrics.tokens.labels(model, "prompt").inc(outcome.prompt_tokens)
        self.metrics.tokens.labels(model, "completion").inc(outcome.completion_tokens)
        if outcome.error:
            self.metrics.errors.labels(model, outcome.error).inc()
        if outcome.ttft_ms is not None:
            self.metrics.ttft.labels(model).observe(outcome.ttft_ms / 1000)
            if outcome.completion_tokens > 1:
                decode = latency - outcome.ttft_ms / 1000
                self.metrics.tpot.labels(model).observe(decode / (outcome.completion_tokens - 1))
        record = AuditRecord(
            ts=time.time(), day=time.strftime("%Y-%m-%d", time.gmtime()),
            key_id=p.key_id if p else None, project_id=p.project_id if p else None,
            route=outcome.route, model=(outcome.model or "")[:128] or None,
            status=outcome.status, error=outcome.error, prompt_tokens=outcome.prompt_tokens,
            completion_tokens=outcome.completion_tokens, latency_ms=latency * 1000,
            ttft_ms=outcome.ttft_ms, replica=outcome.replica, prompt_text=outcome.prompt_text)
        self.audit.add(record)


def _upstream_message(text: str) -> str:
    try:
        body = json.loads(text)
        return str(body.get("error", {}).get("message") or body.get("message") or text)[:500]
    except ValueError:
        return text[:500]
