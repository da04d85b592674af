"""What the endpoint keeps of a chat (issue #43), when the project's policy allows: off keeps
nothing, `request` keeps chats sent with `store: true`, `all` keeps every chat.

A capture follows its request: the reply is collected as it is relayed (a stream whole, after
its last event), and the row is built and written by the audit writer's thread, never on the
request's path; PII is scrubbed there too, with the datasets' own scrubber (curation/pii.py),
when the project asks for it.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from curation.pii import scrub
from gateway.db import StoredCompletion
from gateway.protocol import ChatCompletionRequest
from gateway.tenancy import Principal

POLICIES = ("off", "request", "all")


def as_json(value: Any) -> str:
    """Kept text as JSON with its characters as they are (what metadata filters and the
    erasure search match against); control characters are escaped, so NUL never reaches the
    database."""
    return json.dumps(value, ensure_ascii=False)


def scrubbed(text: str) -> str:
    return scrub(text)[0]
SESSION_KEY = "session"  # the metadata pair that groups a conversation's turns


def text_or_none(value: Any) -> str | None:
    return value[:256] if isinstance(value, str) else None


def choices_of(data: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    """An answer's choices by index, whatever shape the engine sent them in."""
    choices = data.get("choices")
    found = []
    for position, choice in enumerate(choices if isinstance(choices, list) else ()):
        if isinstance(choice, dict):
            index = choice.get("index")
            found.append((index if isinstance(index, int) and 0 <= index < 128 else position,
                          choice))
    return found


def wanted(principal: Principal, request: ChatCompletionRequest) -> bool:
    return principal.capture == "all" or (principal.capture == "request" and request.store)


@dataclass
class Capture:
    """One answer being kept: the conversation as sent, and the reply as it arrives."""

    principal: Principal
    model: str
    messages: list[dict[str, str]]
    metadata: dict[str, str]
    completion_id: str | None = None
    served: str | None = None
    replica: str | None = None
    streamed: bool = False
    usage: dict[str, int] = field(default_factory=dict)
    ts: float = field(default_factory=time.time)
    pieces: dict[int, list[str]] = field(default_factory=dict)
    finish: dict[int, str | None] = field(default_factory=dict)

    @classmethod
    def of(cls, principal: Principal, request: ChatCompletionRequest,
           model: str | None = None) -> Capture | None:
        """A capture for `request` answered by `model` (the request's own by default), or None
        when the project keeps nothing of it."""
        if not wanted(principal, request):
            return None
        return cls(principal, model or request.model,
                   [{"role": m.role, "content": m.content} for m in request.messages],
                   dict(request.metadata or {}), streamed=request.stream)

    def reply(self, data: dict[str, Any]) -> None:
        """A whole answer (not streamed). Read defensively: whatever an engine sends, keeping it
        never fails the chat."""
        self._answer(data)
        for index, choice in choices_of(data):
            message = choice.get("message")
            text = message.get("content") if isinstance(message, dict) else None
            self.pieces[index] = [text if isinstance(text, str) else ""]
            self.finish[index] = text_or_none(choice.get("finish_reason"))

    def chunk(self, chunk: dict[str, Any]) -> None:
        """One event of a stream."""
        if self.completion_id is None:
            self._answer(chunk)
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        for index, choice in choices_of(chunk):
            delta = choice.get("delta")
            text = delta.get("content") if isinstance(delta, dict) else None
            if isinstance(text, str) and text:
                self.pieces.setdefault(index, []).append(text)
            if choice.get("finish_reason"):
                self.finish[index] = text_or_none(choice["finish_reason"])

    def _answer(self, data: dict[str, Any]) -> None:
        """The answer's id (the engine's; one of ours when it sent none), model and usage."""
        given = data.get("id")
        self.completion_id = given[:96] if isinstance(given, str) and given.isprintable() \
            and given else f"chatcmpl-gw-{uuid.uuid4().hex}"
        self.served = text_or_none(data.get("model"))
        self.usage = data["usage"] if isinstance(data.get("usage"), dict) else self.usage

    def row(self, latency_ms: float,
            ttft_ms: float | None) -> StoredCompletion | None:
        """The database row (built on the writer's thread: scrubbing and JSON are not the
        caller's wait); None when no answer came."""
        if not self.completion_id or not self.pieces:
            return None
        clean = scrubbed if self.principal.capture_scrub_pii else str
        messages = [{"role": m["role"], "content": clean(m["content"])} for m in self.messages]
        choices = [{"index": i, "message": {"role": "assistant",
                                            "content": clean("".join(self.pieces[i]))},
                    "finish_reason": self.finish.get(i)} for i in sorted(self.pieces)]
        metadata = {k: clean(v) for k, v in self.metadata.items()}
        texts = tuple(as_json(v) for v in (messages, choices, metadata))
        return StoredCompletion(
            completion_id=self.completion_id[:96], project_id=self.principal.project_id,
            key_id=self.principal.key_id, user=self.principal.user, ts=self.ts,
            model=self.model, served=(self.served or "")[:256] or None,
            replica=(self.replica or "")[:256] or None, messages=texts[0], choices=texts[1],
            metadata_json=texts[2], session=metadata.get(SESSION_KEY), shared=False,
            prompt_tokens=int(self.usage.get("prompt_tokens", 0)),
            completion_tokens=int(self.usage.get("completion_tokens", 0)),
            latency_ms=latency_ms, ttft_ms=ttft_ms, streamed=self.streamed,
            size=sum(len(t.encode()) for t in texts))
