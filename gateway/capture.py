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
from dataclasses import dataclass, field
from typing import Any

from curation.pii import scrub
from gateway.db import StoredCompletion
from gateway.protocol import ChatCompletionRequest
from gateway.tenancy import Principal

POLICIES = ("off", "request", "all")
SESSION_KEY = "session"  # the metadata pair that groups a conversation's turns


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
        """A whole answer (not streamed)."""
        self.completion_id, self.served = data.get("id"), data.get("model")
        self.usage = data.get("usage") or {}
        for choice in data.get("choices") or ():
            index = int(choice.get("index", 0))
            self.pieces[index] = [(choice.get("message") or {}).get("content") or ""]
            self.finish[index] = choice.get("finish_reason")

    def chunk(self, chunk: dict[str, Any]) -> None:
        """One event of a stream."""
        self.completion_id = self.completion_id or chunk.get("id")
        self.served = self.served or chunk.get("model")
        self.usage = chunk.get("usage") or self.usage
        for choice in chunk.get("choices") or ():
            index = int(choice.get("index", 0))
            text = (choice.get("delta") or {}).get("content")
            if text:
                self.pieces.setdefault(index, []).append(text)
            if choice.get("finish_reason"):
                self.finish[index] = choice["finish_reason"]

    def row(self, latency_ms: float,
            ttft_ms: float | None) -> StoredCompletion | None:
        """The database row (built on the writer's thread: scrubbing and JSON are not the
        caller's wait); None when no answer came."""
        if not self.completion_id or not self.pieces:
            return None
        clean = (lambda text: scrub(text)[0]) if self.principal.capture_scrub_pii else str
        messages = [{"role": m["role"], "content": clean(m["content"])} for m in self.messages]
        choices = [{"index": i, "message": {"role": "assistant",
                                            "content": clean("".join(self.pieces[i]))},
                    "finish_reason": self.finish.get(i)} for i in sorted(self.pieces)]
        texts = (json.dumps(messages), json.dumps(choices), json.dumps(self.metadata))
        return StoredCompletion(
            completion_id=self.completion_id[:96], project_id=self.principal.project_id,
            key_id=self.principal.key_id, user=self.principal.user, ts=self.ts,
            model=self.model, served=(self.served or "")[:256] or None,
            replica=(self.replica or "")[:256] or None, messages=texts[0], choices=texts[1],
            metadata_json=texts[2], session=self.metadata.get(SESSION_KEY), shared=False,
            prompt_tokens=int(self.usage.get("prompt_tokens", 0)),
            completion_tokens=int(self.usage.get("completion_tokens", 0)),
            latency_ms=latency_ms, ttft_ms=ttft_ms, streamed=self.streamed,
            size=sum(len(t.encode()) for t in texts))
