"""An OpenAI-compatible upstream that answers at once, for measuring what a proxy adds.

    python -m uvicorn bench.mock_openai:app --port 8030 --loop uvloop --http httptools

A bare ASGI app (no framework): `GET /v1/models` lists MODELS; `POST /v1/chat/completions`
returns ANSWER_TOKENS chunks of one token each as server-sent events (a final usage chunk when
`stream_options.include_usage` asks), or one JSON answer when not streaming. Nothing is
computed, so every millisecond a client sees beyond a direct request is the proxy's.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

MODELS = ("bench-model",)
ANSWER_TOKENS = 16
PROMPT_TOKENS = 12

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def _body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _json(send: Send, status: int, payload: dict[str, Any]) -> None:
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _usage() -> dict[str, int]:
    return {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": ANSWER_TOKENS,
            "total_tokens": PROMPT_TOKENS + ANSWER_TOKENS}


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    path = scope["path"]
    if path in ("/health", "/v1/models"):
        await _json(send, 200, {"object": "list", "data": [
            {"id": m, "object": "model", "owned_by": "bench"} for m in MODELS]})
        return
    if path != "/v1/chat/completions":
        await _json(send, 404, {"error": {"message": f"no route {path}", "type": "not_found"}})
        return
    body = json.loads(await _body(receive))
    head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()),
            "model": body["model"]}
    if not body.get("stream"):
        await _json(send, 200, {**head, "object": "chat.completion", "usage": _usage(),
                                "choices": [{"index": 0, "finish_reason": "length", "message": {
                                    "role": "assistant", "content": "tok " * ANSWER_TOKENS}}]})
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/event-stream")]})

    async def event(payload: dict[str, Any]) -> None:
        await send({"type": "http.response.body", "more_body": True,
                    "body": b"data: " + json.dumps(payload).encode() + b"\n\n"})

    chunk = {**head, "object": "chat.completion.chunk"}
    for i in range(ANSWER_TOKENS):
        delta = {"role": "assistant", "content": "tok "} if i == 0 else {"content": "tok "}
        await event({**chunk, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
    await event({**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]})
    if (body.get("stream_options") or {}).get("include_usage"):
        await event({**chunk, "choices": [], "usage": _usage()})
    await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})
