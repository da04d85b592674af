"""Retrieval-augmented chat: search a granted Chroma collection, put the chunks in the prompt,
and return them as citations (source document, chunk id, position, score) with the answer.

The collection's embedding model is the one recorded on it by the index asset, so queries and
documents are embedded alike. Retrieval runs in a worker thread (embedding is CPU work).
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

from config.gateway import GatewaySettings
from gateway.protocol import ChatMessage, GatewayError, RagOptions
from resources.retrieval import chroma_client, chroma_server, open_index, retrieve

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
    def client(self) -> Any:
        url = self.settings.chroma_url
        if url:
            host, port = chroma_server(url)
            return chroma_client(host=host, port=port)
        return chroma_client(self.settings.chroma_path)

    def search(self, options: RagOptions, question: str) -> list[dict[str, Any]]:
        from chromadb.errors import NotFoundError

        try:
            index = open_index(self.client, options.collection)
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


def citations(chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"index": i, **{k: c[k] for k in ("source", "chunk_id", "start", "end", "score")},
             "text": c["text"][:500]} for i, c in enumerate(chunks, 1)]
