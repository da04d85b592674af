"""A vLLM replica on httpx.MockTransport, for gateway tests that need no trained model.

It answers like vLLM's OpenAI server (a model list with adapter parents, usage counts, server-sent
events with one token per chunk and a final usage chunk when asked), records every request it
was sent, and misbehaves on demand: hold a request until released, time out, refuse with 400.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx

PROMPT_TOKENS = 10  # per prompt; what the fake engine bills
ANSWER_TOKENS = 5  # per completion unless max_tokens is lower


@dataclass
class FakeVLLM:
    models: tuple[str, ...] = ("base", "adapter-a", "adapter-b")
    base: str = "base"  # the model it serves as such; the others are its LoRA adapters
    mode: str = "ok"  # ok | hold | timeout | reject
    chunk_delay_s: float = 0.0
    answer_tokens: int = ANSWER_TOKENS
    released: threading.Event = field(default_factory=threading.Event)
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[httpx.Headers] = field(default_factory=list)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def sent(self, path: str) -> list[dict[str, Any]]:
        return [r["body"] for r in self.requests if r["path"] == path]

    async def handle(self, request: httpx.Request) -> httpx.Response:
        self.headers.append(request.headers)
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"object": "list", "data": [
                {"id": m, "object": "model", **({"parent": self.base} if m != self.base else {})}
                for m in self.models]})
        if request.url.path.endswith("/audio/transcriptions"):
            return self.transcribe(request)
        body = json.loads(request.content)
        self.requests.append({"path": request.url.path, "body": body})
        if self.mode == "timeout":
            raise httpx.ReadTimeout("the engine took too long", request=request)
        if self.mode == "reject":
            return httpx.Response(400, json={"object": "error", "message":
                                             "This model's maximum context length is 512 tokens",
                                             "type": "BadRequestError", "code": 400})
        if self.mode == "hold":
            while not self.released.is_set():
                await asyncio.sleep(0.01)
        prompts = body["prompt"] if isinstance(body.get("prompt"), list) else [None]
        tokens = min(body.get("max_tokens", 16), self.answer_tokens)
        choices = len(prompts) * body.get("n", 1)
        usage = {"prompt_tokens": PROMPT_TOKENS * len(prompts),
                 "completion_tokens": tokens * choices,
                 "total_tokens": PROMPT_TOKENS * len(prompts) + tokens * choices}
        chat = request.url.path.endswith("chat/completions")
        if body.get("stream"):
            return httpx.Response(200, headers={"content-type": "text/event-stream"},
                                  content=self._events(body, chat, tokens, choices, usage))
        return httpx.Response(200, json={
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()), "model": body["model"], "usage": usage,
            "choices": [{"index": i, "finish_reason": "length",
                         **({"message": {"role": "assistant", "content": "tok " * tokens}}
                            if chat else {"text": "tok " * tokens})}
                        for i in range(choices)]})

    def transcribe(self, request: httpx.Request) -> httpx.Response:
        """vLLM's verbose_json for a multipart recording: one segment over the WAV's length,
        its text the window's number; the form as sent is recorded (fields, the file's name and
        first bytes)."""
        kind = request.headers["content-type"]
        boundary = kind.split("boundary=")[1].encode()
        form: dict[str, Any] = {"content-type": kind.split(";")[0]}
        for part in request.content.split(b"--" + boundary)[1:-1]:
            head, _, value = part.strip(b"\r\n").partition(b"\r\n\r\n")
            name = head.split(b'name="')[1].split(b'"')[0].decode()
            form[name] = value[:12] if name == "file" else value.decode()
            if name == "file":
                form["file_bytes"] = len(value)
                form["filename"] = head.split(b'filename="')[1].split(b'"')[0].decode()
        self.requests.append({"path": request.url.path, "body": form})
        seconds = (form["file_bytes"] - 44) / 2 / 16_000  # 16-bit mono 16 kHz after a header
        window = len(self.sent(request.url.path))
        return httpx.Response(200, json={
            "text": f" window {window}", "language": "en", "duration": seconds,
            "segments": [{"id": 0, "start": 0.0, "end": round(seconds, 2),
                          "text": f" window {window}"}]})

    async def _events(self, body: dict[str, Any], chat: bool, tokens: int, choices: int,
                      usage: dict[str, int]) -> AsyncIterator[bytes]:
        def event(payload: dict[str, Any]) -> bytes:
            return f"data: {json.dumps(payload)}\n\n".encode()

        stream_id = f"chatcmpl-{uuid.uuid4().hex}"  # one id for all of a stream's events
        for step in range(tokens):
            for i in range(choices):
                await asyncio.sleep(self.chunk_delay_s)
                piece = {"delta": {"content": "tok "}} if chat else {"text": "tok "}
                finish = "length" if step == tokens - 1 else None
                yield event({"id": stream_id, "model": body["model"],
                             "choices": [{"index": i, "finish_reason": finish, **piece}]})
        if (body.get("stream_options") or {}).get("include_usage"):
            yield event({"id": stream_id, "model": body["model"], "choices": [],
                         "usage": usage})
        yield b"data: [DONE]\n\n"
