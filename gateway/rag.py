"""Retrieval-augmented chat: search a granted Chroma collection, put the chunks in the prompt,
and return them as citations (source document, chunk id, position, score) with the answer.

The collection's embedding model is the one recorded on it by the index asset, so queries and
documents are embedded alike. Retrieval runs in a worker thread (embedding is CPU work).
Passages go into the prompt only as far as the served model's context window has room for them
beside the messages and the reply; those left out are named in the answer (`left_out`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import nullcontext
from functools import cached_property
from typing import Any

from config.gateway import GatewaySettings
from gateway.admission import TEMPLATE_TOKENS_PER_MESSAGE
from gateway.protocol import ChatMessage, GatewayError, RagOptions
from resources.retrieval import EMBEDDED, chroma_client, chroma_server, open_index, retrieve

INSTRUCTION = ("Answer the question using only the numbered context passages below and cite "
               "the passages you used as [1], [2], ... If they do not contain the answer, say "
               "that you do not know.")


def collection_not_found(name: str) -> GatewayError:
    # Same answer for "missing" and "not granted", as for models: names must not leak.
    return GatewayError(404, f"The collection '{name}' does not exist or you do not have access "
                             "to it.", "invalid_request_error", "collection_not_found",
                        "rag.collection")


class Retriever:
    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings

    @cached_property
    def server(self) -> Any:
        host, port = chroma_server(self.settings.chroma_url or "")
        return chroma_client(host=host, port=port)

    def client(self) -> Any:
        """A Chroma server's one client; the embedded store per search, so that one another
        process re-indexed is reopened."""
        if self.settings.chroma_url:
            return self.server
        return chroma_client(self.settings.chroma_path)

    def chunks_per_source(self, collections: set[str]) -> dict[tuple[str, str], int]:
        """(collection, source document) -> chunks indexed now (a collection not indexed yet
        has none)."""
        from chromadb.errors import NotFoundError

        counts: dict[tuple[str, str], int] = {}
        with nullcontext() if self.settings.chroma_url else EMBEDDED:
            client = self.client()
            for name in collections:
                try:
                    found = client.get_collection(name).get(include=["metadatas"])
                except (NotFoundError, ValueError):
                    continue
                for meta in found["metadatas"] or []:
                    key = (name, str((meta or {}).get("source")))
                    counts[key] = counts.get(key, 0) + 1
        return counts

    def search(self, options: RagOptions, question: str) -> list[dict[str, Any]]:
        from chromadb.errors import NotFoundError

        with nullcontext() if self.settings.chroma_url else EMBEDDED:
            try:
                index = open_index(self.client(), options.collection)
            except (NotFoundError, ValueError) as exc:
                raise collection_not_found(options.collection) from exc
            return retrieve(index, question, options.top_k, options.mmr)


def question_of(messages: list[ChatMessage]) -> str:
    for message in reversed(messages):
        if message.role == "user":
            return message.content
    raise GatewayError(400, "rag needs a user message to search for.", "invalid_request_error",
                       "invalid_request", "messages")


def augment(messages: list[ChatMessage], chunks: list[dict[str, Any]]) -> list[ChatMessage]:
    context = "\n\n".join(f"[{i}] ({c['source']}) {c['text']}" for i, c in enumerate(chunks, 1))
    return [ChatMessage(role="system", content=f"{INSTRUCTION}\n\n{context}"), *messages]


CITED = ("source", "chunk_id", "start", "end", "score")


def citations(chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"index": i, **{k: c[k] for k in CITED}, "text": c["text"][:500]}
            for i, c in enumerate(chunks, 1)]


def left_out(chunks: list[dict[str, Any]], kept: int) -> list[dict[str, Any]]:
    """The retrieved chunks past the first `kept`, by retrieval rank, and why they were not in
    the prompt."""
    return [{"rank": i, **{k: c[k] for k in CITED}, "reason": "context budget"}
            for i, c in enumerate(chunks[kept:], kept + 1)]


# What a chat template adds once per prompt beyond its per-message markers: a BOS token, the
# generation prompt, a preamble some templates put into the system message.
TEMPLATE_TOKENS = 32


def upper_bound_tokens(messages: list[ChatMessage]) -> int:
    """At most this many prompt tokens whatever the served tokenizer, for a replica that cannot
    count them itself. UTF-8 bytes, not characters / 4: byte-level BPE (GPT-2, Llama 3, Qwen, the
    factory's own base models) and SentencePiece with byte fallback never make more tokens than
    the text has bytes, while a small vocabulary, digits split one per token or a non-Latin script
    make far more than characters / 4, and a count too low is the engine's 400."""
    return TEMPLATE_TOKENS + sum(len(m.content.encode()) + TEMPLATE_TOKENS_PER_MESSAGE
                                 for m in messages)


async def passages_that_fit(messages: list[ChatMessage], chunks: list[dict[str, Any]],
                            window: int, max_tokens: int,
                            count: Callable[[list[ChatMessage]], Awaitable[tuple[int, bool]]]
                            ) -> int:
    """How many of the best-ranked chunks fit in the model's `window` beside the messages and a
    reply of `max_tokens`, the prompt measured by `count` (tokens, and whether that is the exact
    count or an upper bound). Whole passages go, lowest-ranked first: a cut passage may lose the
    very sentence that answers, and citations name whole chunks. A prompt that does not fit even
    without passages is a 400 that names the limit; by an upper bound that proves nothing, so
    then the engine judges the prompt without passages."""
    room = window - max_tokens
    counts: dict[int, tuple[int, bool]] = {}

    async def tokens(n: int) -> int:
        if n not in counts:
            counts[n] = await count(augment(messages, chunks[:n]))
        return counts[n][0]

    if await tokens(len(chunks)) <= room:  # the usual case: one count
        return len(chunks)
    fits, too_many = 0, len(chunks)  # the prompt grows with each passage: bisect
    while too_many - fits > 1:
        middle = (fits + too_many) // 2
        fits, too_many = (middle, too_many) if await tokens(middle) <= room else (fits, middle)
    if fits == 0 and await tokens(0) > room and counts[0][1]:
        raise GatewayError(400, f"This model's maximum context length is {window} tokens; the "
                                f"messages with the retrieval instruction take {counts[0][0]} "
                                f"and max_tokens asks for {max_tokens} more, so not even the "
                                "question fits. Shorten the messages or lower max_tokens.",
                           "invalid_request_error", "context_length_exceeded", "messages")
    return fits
