"""What the gateway does with a request, without HTTP: authorise, admit, route, account, audit.

Every request ends in exactly one audit record (success or error) whose status is the status
the client got, queued once the answer is known and written in batches (gateway/audit.py); the
token reservation made at admission is settled to the real usage there.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
from sqlalchemy.orm import sessionmaker

from gateway.admission import CHARS_PER_TOKEN, Admission, estimate_tokens
from gateway.audit import AuditWriter
from gateway.db import AuditRecord
from gateway.metrics import GatewayMetrics
from gateway.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    GatewayError,
    model_not_found,
    valid_name,
)
from gateway.rag import Retriever, augment, citations, collection_not_found, question_of
from gateway.settings import GatewaySettings
from gateway.tenancy import Principal, Tenancy
from gateway.upstream import (
    NoReplica,
    ReplicaPool,
    UpstreamFailed,
    UpstreamStream,
    UpstreamTimeout,
)
from resources.embeddings import llama_index_embedding, tokenizer


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
    ticket: str | None = None  # the in-flight slot held
    reserved: int = 0  # tokens reserved at admission
    prompt_estimate: int = 0  # billed as the prompt when the engine never said its count
    started: float = field(default_factory=time.perf_counter)


def upstream_error(exc: Exception, model: str) -> GatewayError:
    if isinstance(exc, UpstreamTimeout):
        return GatewayError(504, f"The replica serving '{model}' did not answer in time.",
                            "server_error", "upstream_timeout")
    if isinstance(exc, UpstreamFailed):
        return GatewayError(502, f"The replica serving '{model}' failed mid-request.",
                            "server_error", "upstream_error")
    return GatewayError(503, f"No replica is serving '{model}' right now.", "server_error",
                        "upstream_unavailable")


UPSTREAM_FAULTS = (NoReplica, UpstreamTimeout, UpstreamFailed)


class Gateway:
    def __init__(self, settings: GatewaySettings, tenancy: Tenancy, sessions: sessionmaker,
                 pool: ReplicaPool, admission: Admission, metrics: GatewayMetrics,
                 retriever: Retriever, audit: AuditWriter) -> None:
        self.settings, self.tenancy, self.sessions = settings, tenancy, sessions
        self.pool, self.admission, self.metrics = pool, admission, metrics
        self.retriever, self.audit = retriever, audit

    # -- identity and access ----------------------------------------------------------------
    def authenticate(self, authorization: str | None, address: str,
                     outcome: Outcome) -> Principal:
        """The key's principal; failures count against the client address, and an address
        over its limit is refused before its key is even looked at."""
        self.admission.check_address(address)
        if not authorization or not authorization.startswith("Bearer "):
            self.admission.failed_authentication(address)
            raise GatewayError(401, "Missing API key: send 'Authorization: Bearer <key>'.",
                               "authentication_error", "missing_api_key")
        principal = self.tenancy.authenticate(authorization.removeprefix("Bearer ").strip())
        if principal is None:
            self.admission.failed_authentication(address)
            raise GatewayError(401, "Invalid or revoked API key.", "authentication_error",
                               "invalid_api_key")
        outcome.principal = principal
        return principal

    def admit(self, principal: Principal, outcome: Outcome) -> None:
        """Count the request and take an in-flight slot, before its body is read."""
        self.admission.count_request(principal)
        outcome.ticket = self.admission.enter(principal)

    async def visible_models(self, principal: Principal) -> list[str]:
        served = await self.pool.served()
        granted = self.tenancy.granted(principal.project_id)
        names = {m for m in served if m in granted}
        if self.settings.embedding_model_name in granted:
            names.add(self.settings.embedding_model_name)
        return sorted(names)

    async def authorise_model(self, principal: Principal, model: str) -> None:
        if not valid_name(model):
            raise model_not_found(model)
        if model not in self.tenancy.granted(principal.project_id):
            raise model_not_found(model)
        if (model != self.settings.embedding_model_name
                and model not in await self.pool.served(expecting=model)):
            raise model_not_found(model)

    @staticmethod
    def require_inference(principal: Principal) -> None:
        if not principal.can_infer:
            raise GatewayError(403, f"Role '{principal.role}' may list models and read usage "
                                    "but not run inference.", "permission_error",
                               "insufficient_role")

    def reserve(self, principal: Principal, prompt_tokens: int, completion_tokens: int,
                outcome: Outcome) -> None:
        self.admission.reserve(principal, prompt_tokens + completion_tokens)
        outcome.reserved = prompt_tokens + completion_tokens
        outcome.prompt_estimate = prompt_tokens

    def check_limits(self, prompt_chars: int, messages: int = 0) -> None:
        limits = self.settings.limits
        if messages > limits.max_messages:
            raise GatewayError(400, f"At most {limits.max_messages} messages per request.",
                               "invalid_request_error", "too_many_messages", "messages")
        if prompt_chars > limits.max_prompt_chars:
            raise GatewayError(400, f"The prompt has {prompt_chars} characters; the limit is "
                                    f"{limits.max_prompt_chars}.", "invalid_request_error",
                               "prompt_too_long", "messages")

    def max_tokens(self, request: ChatCompletionRequest | CompletionRequest) -> int:
        """What the request may generate per completion, checked against the limits."""
        limits = self.settings.limits
        for param in ("max_tokens", "min_tokens"):
            value = getattr(request, param)
            if value is not None and value > limits.max_tokens:
                raise GatewayError(400, f"{param} may be at most {limits.max_tokens}.",
                                   "invalid_request_error", f"{param}_too_large", param)
        if request.n > limits.max_n:
            raise GatewayError(400, f"n may be at most {limits.max_n}.",
                               "invalid_request_error", "n_too_large", "n")
        return request.max_tokens or max(min(256, limits.max_tokens), request.min_tokens or 0)

    # -- inference ----------------------------------------------------------------------------
    def _upstream_body(self, request: ChatCompletionRequest | CompletionRequest,
                       max_tokens: int) -> dict:
        body = request.model_dump(exclude_none=True, exclude={
            "compare_with", "rag", "stream_options", "max_completion_tokens"})
        body["max_tokens"] = max_tokens
        if request.stream:
            body["stream_options"] = {"include_usage": True}
        return body

    async def prepare(self, principal: Principal, request: ChatCompletionRequest |
                      CompletionRequest, outcome: Outcome) -> dict:
        """Everything before the engine: role, model, size limits, token reservation, RAG."""
        outcome.model = request.model
        self.require_inference(principal)
        await self.authorise_model(principal, request.model)
        calls = 1  # engine requests made, each billed its prompt
        if isinstance(request, ChatCompletionRequest):
            text = "\n".join(m.content for m in request.messages)
            self.check_limits(len(text), len(request.messages))
            answers, messages = 1, len(request.messages)
            if request.compare_with:
                await self.authorise_model(principal, request.compare_with)
                calls = answers = 2  # the same conversation answered by two models
        else:
            texts = [request.prompt] if isinstance(request.prompt, str) else request.prompt
            if len(texts) > self.settings.limits.max_prompts:
                raise GatewayError(400, f"At most {self.settings.limits.max_prompts} prompts "
                                        "per request.", "invalid_request_error",
                                   "too_many_prompts", "prompt")
            text = "\n".join(texts)
            self.check_limits(len(text))
            answers, messages = len(texts), len(texts)
        max_tokens = self.max_tokens(request)
        prompt = estimate_tokens(text, messages)
        if isinstance(request, ChatCompletionRequest) and request.rag:
            prompt += math.ceil(self.settings.limits.max_prompt_chars / CHARS_PER_TOKEN)
        self.reserve(principal, calls * prompt, answers * request.n * max_tokens, outcome)
        if principal.log_prompts:
            outcome.prompt_text = text
        if isinstance(request, ChatCompletionRequest) and request.rag:
            request = await self.retrieve(principal, request, outcome)
        return self._upstream_body(request, max_tokens)

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
        except UPSTREAM_FAULTS as exc:
            raise upstream_error(exc, body["model"]) from exc
        outcome.replica = replica
        if response.status_code != 200:
            raise GatewayError(response.status_code if response.status_code < 500 else 502,
                               _upstream_message(response.text), "invalid_request_error"
                               if response.status_code < 500 else "server_error",
                               "upstream_error")
        try:
            data = response.json()
            usage = data.get("usage") or {}
            outcome.prompt_tokens += int(usage.get("prompt_tokens", 0))
            outcome.completion_tokens += int(usage.get("completion_tokens", 0))
        except (ValueError, AttributeError, TypeError) as exc:
            raise GatewayError(502, "The replica's answer was not an OpenAI response.",
                               "server_error", "upstream_error") from exc
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

    async def open_stream(self, path: str, body: dict, client_wants_usage: bool,
                          outcome: Outcome) -> AsyncIterator[bytes]:
        """Start the upstream stream; a refusal before the first token keeps its status (a
        4xx stays a 4xx). Returns the relay of its events."""
        try:
            upstream = await self.pool.open_stream(body["model"], path, body)
        except UPSTREAM_FAULTS as exc:
            raise upstream_error(exc, body["model"]) from exc
        outcome.replica = upstream.replica.url
        if upstream.response.status_code != 200:
            try:
                text = (await upstream.response.aread()).decode(errors="replace")
            finally:
                await upstream.aclose()
            status = upstream.response.status_code
            raise GatewayError(status if status < 500 else 502, _upstream_message(text),
                               "invalid_request_error" if status < 500 else "server_error",
                               "upstream_error")
        return self._relay(upstream, client_wants_usage, outcome)

    async def _relay(self, upstream: UpstreamStream, client_wants_usage: bool,
                     outcome: Outcome) -> AsyncIterator[bytes]:
        """Relay server-sent events, counting what is sent: the engine's usage chunk gives the
        exact numbers at the end, and a client that hangs up before it is billed for every
        token relayed until then (one per choice in each chunk with text)."""
        first_token_at, relayed, exact = None, 0, False
        try:
            async for line in upstream.response.aiter_lines():
                if not line.startswith("data: "):
                    continue
                payload = line[6:]
                if payload != "[DONE]":
                    chunk = json.loads(payload)
                    if chunk.get("usage"):
                        outcome.prompt_tokens = chunk["usage"]["prompt_tokens"]
                        outcome.completion_tokens = chunk["usage"]["completion_tokens"]
                        exact = True
                        if not chunk.get("choices") and not client_wants_usage:
                            continue
                        if not client_wants_usage:
                            chunk.pop("usage")
                            payload = json.dumps(chunk)
                    choices = chunk.get("choices") or ()
                    relayed += sum(1 for c in choices if (c.get("delta") or {}).get("content")
                                   or c.get("text"))
                    if first_token_at is None and choices:
                        if outcome.citations is not None:
                            chunk["citations"] = outcome.citations
                            payload = json.dumps(chunk)
                        first_token_at = time.perf_counter()
                        outcome.ttft_ms = (first_token_at - outcome.started) * 1000
                if not exact:
                    outcome.completion_tokens = relayed
                yield f"data: {payload}\n\n".encode()
        except (httpx.TransportError, ValueError) as exc:
            # the status line (200) is gone already: the error travels as an event
            outcome.error = "upstream_error"
            error = GatewayError(502, f"The replica failed mid-stream: {type(exc).__name__}",
                                 "server_error", "upstream_error")
            yield f"data: {json.dumps(error.body())}\n\ndata: [DONE]\n\n".encode()
        finally:
            if not exact:
                outcome.prompt_tokens = outcome.prompt_estimate
                outcome.completion_tokens = relayed
            await upstream.aclose()

    # -- embeddings ---------------------------------------------------------------------------
    async def embeddings(self, request: EmbeddingRequest, principal: Principal,
                         outcome: Outcome) -> dict:
        outcome.model = request.model
        self.require_inference(principal)
        if request.model != self.settings.embedding_model_name:
            raise model_not_found(request.model)
        await self.authorise_model(principal, request.model)
        inputs = [request.input] if isinstance(request.input, str) else request.input
        if len(inputs) > self.settings.limits.max_embedding_inputs:
            raise GatewayError(400, f"At most {self.settings.limits.max_embedding_inputs} "
                                    "inputs per request.", "invalid_request_error",
                               "too_many_inputs", "input")
        self.check_limits(sum(len(i) for i in inputs))
        self.reserve(principal, sum(estimate_tokens(i) for i in inputs), 0, outcome)
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
    def metric_label(self, model: str | None) -> str:
        """Model names the gateway serves, anything else one `other`: clients choose the names
        they send, and every label value is a time series kept for ever."""
        if model and (model == self.settings.embedding_model_name or self.pool.serves(model)):
            return model
        return "other" if model else "-"

    async def finish(self, outcome: Outcome) -> None:
        """Give back the in-flight slot, settle the tokens, count, and queue the audit row."""
        latency = time.perf_counter() - outcome.started
        p = outcome.principal
        if p is not None:
            if outcome.ticket is not None:
                self.admission.leave(p, outcome.ticket)
                outcome.ticket = None
            if outcome.reserved:
                self.admission.settle(p, outcome.reserved,
                                      outcome.prompt_tokens + outcome.completion_tokens)
        model = self.metric_label(outcome.model)
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
        self.audit.add(AuditRecord(
            ts=time.time(), day=time.strftime("%Y-%m-%d", time.gmtime()),
            key_id=p.key_id if p else None, project_id=p.project_id if p else None,
            route=outcome.route, model=audited_name(outcome.model),
            status=outcome.status, error=outcome.error, prompt_tokens=outcome.prompt_tokens,
            completion_tokens=outcome.completion_tokens, latency_ms=latency * 1000,
            ttft_ms=outcome.ttft_ms, replica=outcome.replica,
            prompt_text=outcome.prompt_text.replace("\x00", "\ufffd")
            if outcome.prompt_text else None))


def audited_name(model: str | None) -> str | None:
    """The model name as sent when it is a valid name; otherwise a marker (control characters
    and NUL never reach the database)."""
    if not model:
        return None
    return model if valid_name(model) else "(invalid name)"


def _upstream_message(text: str) -> str:
    try:
        body = json.loads(text)
        return str(body.get("error", {}).get("message") or body.get("message") or text)[:500]
    except ValueError:
        return text[:500]
