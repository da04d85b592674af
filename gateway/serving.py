"""The proxy, without HTTP: a request checked by access (gateway/access.py) goes to a replica
that serves its model (or to RAG retrieval, or the local embedding model), and what came back is
relayed and measured for accounting (gateway/accounting.py).
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import time
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import httpx
from sqlalchemy.orm import sessionmaker

from config.gateway import GatewaySettings
from gateway.access import Access
from gateway.accounting import Accounting, Outcome
from gateway.admission import CHARS_PER_TOKEN, Admission, estimate_tokens
from gateway.audit import AuditWriter
from gateway.capture import Capture
from gateway.cards import ModelCards
from gateway.metrics import GatewayMetrics
from gateway.protocol import (
    ChatCompletionRequest,
    ChatMessage,
    CompletionRequest,
    EmbeddingRequest,
    GatewayError,
    model_not_found,
)
from gateway.rag import (
    Retriever,
    augment,
    citations,
    collection_not_found,
    left_out,
    passages_that_fit,
    question_of,
    upper_bound_tokens,
)
from gateway.stored_completions import StoredCompletions
from gateway.tenancy import Principal, Tenancy
from gateway.tracing import Tracing
from gateway.transcription import Transcriber
from gateway.upstream import (
    NoReplica,
    ReplicaPool,
    UpstreamFailed,
    UpstreamStream,
    UpstreamTimeout,
)
from resources.embeddings import llama_index_embedding, tokenizer


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
        self.access = Access(settings, tenancy, admission, pool)
        self.cards = ModelCards(settings)
        self.tracing = Tracing(settings)
        self.accounting = Accounting(settings, admission, pool, metrics, audit, self.tracing)
        self.transcriber = Transcriber(settings, self.access, tenancy, pool, audit)
        self.stored = StoredCompletions(sessions, audit, settings.project_quota)

    # -- inference ----------------------------------------------------------------------------
    def _upstream_body(self, request: ChatCompletionRequest | CompletionRequest,
                       max_tokens: int) -> dict:
        body = request.model_dump(exclude_none=True, exclude={
            "compare_with", "rag", "stream_options", "max_completion_tokens", "store", "metadata"})
        body["max_tokens"] = max_tokens
        if request.stream:
            body["stream_options"] = {"include_usage": True}
        return body

    async def prepare(self, principal: Principal, request: ChatCompletionRequest |
                      CompletionRequest, outcome: Outcome) -> dict:
        """Everything before the engine: role, model, size limits, token reservation, RAG."""
        outcome.model = request.model
        self.access.require_inference(principal)
        await self.access.authorise_model(principal, request.model)
        self.access.require_generative(request.model)
        calls = 1  # engine requests made, each billed its prompt
        if isinstance(request, ChatCompletionRequest):
            text = "\n".join(m.content for m in request.messages)
            self.access.check_limits(len(text), len(request.messages))
            answers, messages = 1, len(request.messages)
            if request.compare_with:
                await self.access.authorise_model(principal, request.compare_with)
                self.access.require_generative(request.compare_with, "compare_with")
                calls = answers = 2  # the same conversation answered by two models
        else:
            texts = [request.prompt] if isinstance(request.prompt, str) else request.prompt
            if len(texts) > self.settings.limits.max_prompts:
                raise GatewayError(400, f"At most {self.settings.limits.max_prompts} prompts "
                                        "per request.", "invalid_request_error",
                                   "too_many_prompts", "prompt")
            text = "\n".join(texts)
            self.access.check_limits(len(text))
            answers, messages = len(texts), len(texts)
        max_tokens = self.access.max_tokens(request)
        prompt = estimate_tokens(text, messages)
        if isinstance(request, ChatCompletionRequest) and request.rag:
            prompt += math.ceil(self.settings.limits.max_prompt_chars / CHARS_PER_TOKEN)
        self.access.reserve(principal, calls * prompt, answers * request.n * max_tokens, outcome)
        if principal.log_prompts:
            outcome.prompt_text = text
        if isinstance(request, ChatCompletionRequest) and request.rag:
            request = await self.retrieve(principal, request, max_tokens, outcome)
        return self._upstream_body(request, max_tokens)

    async def retrieve(self, principal: Principal, request: ChatCompletionRequest,
                       max_tokens: int, outcome: Outcome) -> ChatCompletionRequest:
        """Search a collection the project may read and put what was found in the prompt, as
        much of it as each answering model's window has room for beside a reply of
        `max_tokens`."""
        assert request.rag is not None
        if request.rag.collection not in self.tenancy.granted(principal.project_id,
                                                              "collection"):
            raise collection_not_found(request.rag.collection)
        chunks = await asyncio.to_thread(self.retriever.search, request.rag,
                                         question_of(request.messages))
        kept = len(chunks)
        for model in filter(None, (request.model, request.compare_with)):
            window = self.pool.context_window(model)
            if window is not None:  # unknown: the engine judges the whole prompt itself
                kept = await passages_that_fit(request.messages, chunks[:kept], window,
                                               max_tokens, partial(self.count_prompt, model))
        outcome.citations, outcome.left_out = citations(chunks[:kept]), left_out(chunks, kept)
        return request.model_copy(update={"messages": augment(request.messages, chunks[:kept])})

    async def count_prompt(self, model: str, messages: list[ChatMessage]) -> tuple[int, bool]:
        """The prompt's tokens as a replica of `model` counts them, and True: vLLM's /tokenize
        applies the model's own tokenizer and chat template, so this is the number its engine
        checks against the window. An upper bound and False when the replica cannot count (an
        engine that is not vLLM)."""
        try:
            response, _ = await self.pool.post(model, "/tokenize", {
                "model": model, "messages": [m.model_dump() for m in messages]})
        except UPSTREAM_FAULTS as exc:
            raise upstream_error(exc, model) from exc
        try:
            if response.status_code == 200:
                return int(response.json()["count"]), True
        except (ValueError, KeyError, TypeError):
            pass
        return upper_bound_tokens(messages), False

    async def complete(self, path: str, body: dict, outcome: Outcome,
                       capture: Capture | None = None) -> dict:
        """One engine request; what it answered is kept when `capture` says so."""
        try:
            response, replica = await self.pool.post(body["model"], path, body)
        except UPSTREAM_FAULTS as exc:
            raise upstream_error(exc, body["model"]) from exc
        outcome.replica = replica
        if response.status_code != 200:
            raise upstream_refusal(response.status_code, response.text)
        try:
            data = response.json()
            usage = data.get("usage") or {}
            outcome.prompt_tokens += int(usage.get("prompt_tokens", 0))
            outcome.completion_tokens += int(usage.get("completion_tokens", 0))
        except (ValueError, AttributeError, TypeError) as exc:
            raise GatewayError(502, "The replica's answer was not an OpenAI response.",
                               "server_error", "upstream_error") from exc
        if capture is not None:
            capture.reply(data)
            capture.replica = replica
            outcome.captures.append(capture)
        return data

    async def chat(self, request: ChatCompletionRequest, principal: Principal,
                   outcome: Outcome) -> dict:
        body = await self.prepare(principal, request, outcome)
        data = await self.complete("/v1/chat/completions", body, outcome,
                                   Capture.of(principal, request))
        if outcome.citations is not None:
            data["citations"], data["left_out"] = outcome.citations, outcome.left_out
        if request.compare_with:
            other = await self.complete("/v1/chat/completions",
                                        {**body, "model": request.compare_with}, outcome,
                                        Capture.of(principal, request, request.compare_with))
            data["comparison"] = [{"id": other.get("id"), "model": other["model"],
                                   "choices": other["choices"], "usage": other.get("usage")}]
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
        for capture in outcome.captures:
            capture.replica = upstream.replica.url
        if upstream.response.status_code != 200:
            try:
                text = (await upstream.response.aread()).decode(errors="replace")
            finally:
                await upstream.aclose()
            raise upstream_refusal(upstream.response.status_code, text)
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
                if payload == "[DONE]" and outcome.captures:
                    self.accounting.keep(outcome)  # whole: kept before the client reads the end
                if payload != "[DONE]":
                    chunk = json.loads(payload)
                    for capture in outcome.captures:
                        capture.chunk(chunk)
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
                            chunk["left_out"] = outcome.left_out
                            payload = json.dumps(chunk)
                        first_token_at = time.perf_counter()
                        outcome.ttft_ms = (first_token_at - outcome.started) * 1000
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
        self.access.require_inference(principal)
        if request.model != self.settings.embedding_model_name:
            raise model_not_found(request.model)
        await self.access.authorise_model(principal, request.model)
        inputs = [request.input] if isinstance(request.input, str) else request.input
        if len(inputs) > self.settings.limits.max_embedding_inputs:
            raise GatewayError(400, f"At most {self.settings.limits.max_embedding_inputs} "
                                    "inputs per request.", "invalid_request_error",
                               "too_many_inputs", "input")
        self.access.check_limits(sum(len(i) for i in inputs))
        self.access.reserve(principal, sum(estimate_tokens(i) for i in inputs), 0, outcome)
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

def upstream_refusal(status: int, text: str) -> GatewayError:
    """A replica's non-200 answer: its 4xx kept as is, anything else a 502."""
    return GatewayError(status if status < 500 else 502, _upstream_message(text),
                        "invalid_request_error" if status < 500 else "server_error",
                        "upstream_error")


def _upstream_message(text: str) -> str:
    try:
        body = json.loads(text)
        return str(body.get("error", {}).get("message") or body.get("message") or text)[:500]
    except ValueError:
        return text[:500]
