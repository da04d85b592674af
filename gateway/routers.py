"""HTTP only: the OpenAI-compatible routes, their order of checks, error rendering.

Order for every /v1 request: client address (failed-auth limit), key, requests per minute and
in-flight slot (before the body is read, so rejected requests are limited too), then the body
(size while reading, JSON, schema), model, token reservation, and the engine. Any failure is an
OpenAI error body whose status is also the audit row's.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from starlette.types import Receive, Scope, Send

from gateway import protocol as p
from gateway.accounting import Outcome
from gateway.bodies import parse
from gateway.capture import Capture
from gateway.credentials import bearer_token
from gateway.serving import Gateway
from gateway.tenancy import Principal
from gateway.transcription import TranscriptionForm

log = logging.getLogger("gateway")


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema with its $defs inlined, for the OpenAPI document."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return resolve(defs[node["$ref"].split("/")[-1]])
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    return resolve(schema)


def body_of(model: type[BaseModel]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": inline_schema(model)}}}}


TRANSCRIPTION_FORM = {"requestBody": {"required": True, "content": {"multipart/form-data": {
    "schema": {**inline_schema(TranscriptionForm), "required": ["file", "model"],
               "properties": {"file": {"type": "string", "format": "binary"},
                              **inline_schema(TranscriptionForm)["properties"]}}}}}}

ERRORS = {code: {"model": p.ErrorResponse, "description": text} for code, text in {
    400: "invalid request", 401: "missing, invalid or revoked key", 403: "role may not do this",
    404: "unknown model (or not granted)", 413: "body too large", 429: "rate limited",
    502: "upstream error", 503: "no replica available", 504: "upstream timeout"}.items()}


def internal_error() -> p.GatewayError:
    return p.GatewayError(500, "The gateway failed on this request; it has been logged.",
                          "server_error", "internal_error")


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def is_admin(request: Request, gateway: Gateway) -> bool:
    """The platform admin's token, compared in constant time."""
    admin = gateway.settings.admin_token
    token = bearer_token(request.headers.get("authorization")) or ""
    return bool(admin) and hmac.compare_digest(token.encode(), admin.encode())


class RelayResponse(StreamingResponse):
    """A stream whose clean-up runs however the response ends (finished, client gone, error):
    the upstream is closed, the slot given back, the tokens settled and the row audited."""

    def __init__(self, body: Any, on_close: Callable[[], Awaitable[None]],
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(body, media_type="text/event-stream", headers=headers)
        self._body, self._on_close = body, on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            try:
                await self._body.aclose()
            finally:
                await self._on_close()


def query_int(raw: str | None, param: str) -> int | None:
    """An integer query parameter, read inside the request's handling (so a bad one is a 400
    with an audit row, like any bad input)."""
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 9:
        raise p.GatewayError(400, f"{param} is a whole number.", "invalid_request_error",
                             "invalid_request", param)
    return int(raw)


def metadata_filter(request: Request) -> dict[str, str]:
    """`metadata[key]=value` query pairs (how the openai SDK sends a metadata filter)."""
    return {k[9:-1]: v for k, v in request.query_params.multi_items()
            if k.startswith("metadata[") and k.endswith("]")}


KEPT_HEADER = "x-adapter-factory-kept"


def kept_header(outcome: Outcome) -> dict[str, str]:
    """Says the chat is kept (the project's capture policy took it): the playground offers
    rating and correcting only then."""
    return {KEPT_HEADER: "1"} if outcome.captures else {}


def error_response(error: p.GatewayError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


async def handled(gateway: Gateway, route: str, request: Request,
                  work: Callable[[Principal, Outcome], Awaitable[Response]]) -> Response:
    """One request the gateway's way: key, admission, the work, and an audit row however it
    ends (an error in OpenAI's format, never a 5xx for bad input)."""
    outcome = Outcome(route=route)
    streaming = False
    try:
        principal = gateway.access.authenticate(request.headers.get("authorization"),
                                                client_address(request), outcome)
        gateway.access.admit(principal, outcome)
        response = await work(principal, outcome)
        streaming = isinstance(response, RelayResponse)
        return response
    except p.GatewayError as error:
        outcome.status, outcome.error = error.status, error.code or error.type
        return error_response(error)
    except Exception:
        log.exception("%s failed", route)
        error = internal_error()
        outcome.status, outcome.error = error.status, error.code
        return error_response(error)
    finally:
        if not streaming:  # a stream is accounted for when it ends
            await gateway.accounting.finish(outcome)


def make_router(gateway: Gateway) -> APIRouter:
    router = APIRouter()
    limits = gateway.settings.limits

    handle = functools.partial(handled, gateway)

    async def streamed(path: str, body: p.ChatCompletionRequest | p.CompletionRequest,
                       principal: Principal, outcome: Outcome) -> Response:
        upstream = await gateway.prepare(principal, body, outcome)
        if isinstance(body, p.ChatCompletionRequest):
            capture = Capture.of(principal, body)
            outcome.captures.extend([capture] if capture else [])
        wants_usage = bool(body.stream_options and body.stream_options.include_usage)
        events = await gateway.open_stream(path, upstream, wants_usage, outcome)
        return RelayResponse(events, lambda: gateway.accounting.finish(outcome),
                             kept_header(outcome))

    @router.get("/v1/models", responses=ERRORS)
    async def list_models(request: Request) -> Response:
        async def work(principal: Principal, outcome: Outcome) -> Response:
            names = await gateway.access.visible_models(principal)
            # `type` is ours (clients ignore fields OpenAI does not define): the playground
            # offers only chat models for chats, only speech models for recordings
            return JSONResponse({"object": "list", "data": [
                {"id": n, "object": "model", "owned_by": "adapter-factory",
                 "type": gateway.access.model_type(n)} for n in names]})
        return await handle("models", request, work)

    @router.get("/v1/models/{model}/card", responses=ERRORS)
    async def model_card(model: str, request: Request) -> Response:
        """The model card (Markdown) of a model the key's project may use: for an adapter, its
        current champion's README.md."""
        async def work(principal: Principal, outcome: Outcome) -> Response:
            outcome.model = model
            await gateway.access.authorise_model(principal, model)
            card = await asyncio.to_thread(gateway.cards.card, model)
            if card is None:
                raise p.GatewayError(404, f"The model '{model}' has no model card (only "
                                          "promoted adapters have one).",
                                     "invalid_request_error", "card_not_found")
            return JSONResponse({"id": model, "object": "model.card", "markdown": card})
        return await handle("models.card", request, work)

    @router.get("/v1/collections", responses=ERRORS)
    async def collections(request: Request) -> Response:
        """The document collections the key's project may ask (`rag.collection`)."""
        async def work(principal: Principal, outcome: Outcome) -> Response:
            names = sorted(gateway.tenancy.granted(principal.project_id, "collection"))
            return JSONResponse({"object": "list", "data": [
                {"id": n, "object": "collection"} for n in names]})
        return await handle("collections", request, work)

    @router.post("/v1/chat/completions", responses=ERRORS,
                 openapi_extra=body_of(p.ChatCompletionRequest))
    async def chat(request: Request) -> Response:
        async def work(principal: Principal, outcome: Outcome) -> Response:
            body = await parse(request, p.ChatCompletionRequest, limits)
            if body.stream:
                if body.compare_with:
                    raise p.GatewayError(400, "compare_with cannot be combined with stream.",
                                         "invalid_request_error", "invalid_request", "stream")
                return await streamed("/v1/chat/completions", body, principal, outcome)
            answer = await gateway.chat(body, principal, outcome)
            return JSONResponse(answer, headers=kept_header(outcome))
        return await handle("chat.completions", request, work)

    stored = gateway.stored

    async def threaded(route: str, request: Request, call: Callable[..., Any], *args: Any,
                       body: type[BaseModel] | None = None) -> Response:
        """`call(principal, *args[, the parsed body])` on a worker thread (kept chats are rows
        to read or write), answered as JSON."""
        async def work(principal: Principal, outcome: Outcome) -> Response:
            parsed = (await parse(request, body, limits),) if body else ()
            return JSONResponse(await asyncio.to_thread(call, principal, *args, *parsed))
        return await handle(route, request, work)

    @router.get("/v1/chat/completions", responses=ERRORS)
    async def list_stored(request: Request, model: str | None = None, after: str | None = None,
                          limit: str | None = None, order: str | None = None) -> Response:
        """The project's stored completions (`store: true`), oldest first unless
        order=desc; `metadata[key]=value` pairs filter."""
        return await threaded("chat.completions.list", request, stored.list, model,
                              metadata_filter(request), after, limit, order)

    @router.get("/v1/chat/completions/{completion_id}", responses=ERRORS)
    async def retrieve_stored(completion_id: str, request: Request) -> Response:
        return await threaded("chat.completions.retrieve", request, stored.retrieve,
                              completion_id)

    @router.post("/v1/chat/completions/{completion_id}", responses=ERRORS,
                 openapi_extra=body_of(p.MetadataUpdate))
    async def update_stored(completion_id: str, request: Request) -> Response:
        """Replace a stored completion's metadata."""
        return await threaded("chat.completions.update", request, stored.update,
                              completion_id, body=p.MetadataUpdate)

    @router.delete("/v1/chat/completions/{completion_id}", responses=ERRORS)
    async def delete_stored(completion_id: str, request: Request) -> Response:
        """Delete a stored completion and its feedback (the project's owner)."""
        return await threaded("chat.completions.delete", request, stored.delete,
                              completion_id)

    @router.get("/v1/chat/completions/{completion_id}/messages", responses=ERRORS)
    async def stored_messages(completion_id: str, request: Request, after: str | None = None,
                              limit: str | None = None, order: str | None = None) -> Response:
        return await threaded("chat.completions.messages", request, stored.messages,
                              completion_id, after, limit, order)

    @router.post("/v1/chat/completions/{completion_id}/feedback", responses=ERRORS,
                 openapi_extra=body_of(p.FeedbackCreate))
    async def give_feedback(completion_id: str, request: Request) -> Response:
        """A thumb, a score in [0, 1], a comment, a correction, or `better_than` another
        stored answer to the same conversation."""
        return await threaded("chat.completions.feedback", request, stored.feedback,
                              completion_id, body=p.FeedbackCreate)

    @router.get("/v1/chat/completions/{completion_id}/feedback", responses=ERRORS)
    async def read_feedback(completion_id: str, request: Request) -> Response:
        return await threaded("chat.completions.feedback.list", request, stored.feedback_of,
                              completion_id)

    @router.get("/v1/chat/sessions", responses=ERRORS)
    async def chat_sessions(request: Request) -> Response:
        """The caller's conversations (stored turns sharing `metadata.session`) and those
        shared with the project."""
        return await threaded("chat.sessions", request, stored.sessions_of)

    @router.post("/v1/chat/sessions/{session}/share", responses=ERRORS)
    async def share_session(session: str, request: Request) -> Response:
        return await threaded("chat.sessions.share", request, stored.share, session)

    @router.post("/v1/completions", responses=ERRORS,
                 openapi_extra=body_of(p.CompletionRequest))
    async def completions(request: Request) -> Response:
        async def work(principal: Principal, outcome: Outcome) -> Response:
            body = await parse(request, p.CompletionRequest, limits)
            if body.stream:
                return await streamed("/v1/completions", body, principal, outcome)
            return JSONResponse(await gateway.completions(body, principal, outcome))
        return await handle("completions", request, work)

    @router.post("/v1/embeddings", responses=ERRORS,
                 openapi_extra=body_of(p.EmbeddingRequest))
    async def embeddings(request: Request) -> Response:
        async def work(principal: Principal, outcome: Outcome) -> Response:
            body = await parse(request, p.EmbeddingRequest, limits)
            return JSONResponse(await gateway.embeddings(body, principal, outcome))
        return await handle("embeddings", request, work)

    @router.post("/v1/audio/transcriptions", responses=ERRORS, openapi_extra=TRANSCRIPTION_FORM)
    async def transcriptions(request: Request) -> Response:
        """Speech to text with a speech model the key's project may use (multipart form)."""
        async def work(principal: Principal, outcome: Outcome) -> Response:
            return await gateway.transcriber.transcribe(request, principal, outcome)
        return await handle("audio.transcriptions", request, work)

    @router.get("/v1/usage", responses=ERRORS)
    async def usage(request: Request, day: str | None = None) -> Response:
        """The key's project's requests and tokens per day and key (any role may read)."""
        async def work(principal: Principal, outcome: Outcome) -> Response:
            if day is not None and not p.valid_day(day):
                raise p.GatewayError(400, "day must be a calendar day written YYYY-MM-DD.",
                                     "invalid_request_error", "invalid_request", "day")
            return JSONResponse({"object": "list", "project": principal.project,
                                 "key_id": principal.key_id,
                                 "data": gateway.tenancy.usage(principal.project, day)})
        return await handle("usage", request, work)

    @router.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        if not is_admin(request, gateway):
            return error_response(p.GatewayError(401, "Metrics need the admin token.",
                                                 "authentication_error", "not_admin"))
        return Response(generate_latest(gateway.metrics.registry),
                        media_type=CONTENT_TYPE_LATEST)

    @router.get("/health", include_in_schema=False)
    async def health(request: Request) -> Response:
        """ok / unavailable for anyone (load balancers); replicas and models for the admin."""
        served = await gateway.pool.served()
        ok = any(r.healthy for r in gateway.pool.replicas)
        status = 200 if ok else 503
        if not is_admin(request, gateway):
            return JSONResponse({"status": "ok" if ok else "unavailable"}, status_code=status)
        return JSONResponse({"status": "ok" if ok else "unavailable", "replicas": [
            {"url": r.url, "healthy": r.healthy, "models": sorted(r.models)}
            for r in gateway.pool.replicas], "models": sorted(served)}, status_code=status)

    return router



