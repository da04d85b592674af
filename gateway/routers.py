"""HTTP only: routes, body parsing in a fixed order (size, key, JSON, schema), error rendering.

Bodies are parsed here rather than by FastAPI so that every failure, including malformed JSON,
is answered in OpenAI's error format and still leaves an audit record.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ValidationError

from gateway import protocol as p
from gateway.serving import Gateway, Outcome
from gateway.tenancy import Principal, TenancyError

M = TypeVar("M", bound=BaseModel)


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


ERRORS = {code: {"model": p.ErrorResponse, "description": text} for code, text in {
    400: "invalid request", 401: "missing, invalid or revoked key", 403: "role may not do this",
    404: "unknown model (or not granted)", 413: "body too large", 429: "rate limited",
    502: "upstream error", 503: "no replica available"}.items()}


async def parse(request: Request, model: type[M], limit: int) -> M:
    raw = await request.body()
    if len(raw) > limit:
        raise p.GatewayError(413, f"Request body is {len(raw)} bytes; the limit is {limit}.",
                             "invalid_request_error", "request_too_large")
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise p.GatewayError(400, f"Request body is not valid JSON: {exc}",
                             "invalid_request_error", "invalid_json") from exc
    if not isinstance(data, dict):
        raise p.GatewayError(400, "Request body must be a JSON object.",
                             "invalid_request_error", "invalid_json")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(x) for x in first["loc"]) or None
        raise p.GatewayError(400, f"Invalid request: {param}: {first['msg']}",
                             "invalid_request_error", "invalid_request", param) from exc


def error_response(error: p.GatewayError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


def make_router(gateway: Gateway) -> APIRouter:
    router = APIRouter()
    limit = gateway.settings.limits.max_body_bytes

    async def handle(route: str, request: Request,
                     work: Callable[[Principal, Outcome], Awaitable[Response]]) -> Response:
        outcome = Outcome(route=route)
        streaming = False
        try:
            principal = gateway.authenticate(request.headers.get("authorization"), outcome)
            response = await work(principal, outcome)
            streaming = isinstance(response, StreamingResponse)
            return response
        except p.GatewayError as error:
            outcome.status, outcome.error = error.status, error.code or error.type
            return error_response(error)
        finally:
            if not streaming:  # a stream writes its audit record when it ends
                await gateway.finish(outcome)

    async def streamed(path: str, body: p.ChatCompletionRequest | p.CompletionRequest,
                       principal: Principal, outcome: Outcome) -> StreamingResponse:
        upstream = await gateway.prepare(principal, body, outcome)
        wants_usage = bool((body.stream_options or {}).get("include_usage"))
        return StreamingResponse(gateway.stream(path, upstream, wants_usage, outcome),
                                 media_type="text/event-stream")

    @router.get("/v1/models", responses=ERRORS)
    async def list_models(request: Request) -> Response:
        async def work(principal: Principal, outcome: Outcome) -> Response:
            gateway.admit(principal, write=False)
            names = await gateway.visible_models(principal)
            return JSONResponse({"object": "list", "data": [
                {"id": n, "object": "model", "owned_by": "adapter-factory"} for n in names]})
        return await handle("models", request, work)

    @router.post("/v1/chat/completions", responses=ERRORS,
                 openapi_extra=body_of(p.ChatCompletionRequest))
    async def chat(request: Request) -> Response:
        async def work(principal: Principal, outcome: Outcome) -> Response:
            body = await parse(request, p.ChatCompletionRequest, limit)
            if body.stream:
                if body.compare_with:
                    raise p.GatewayError(400, "compare_with cannot be combined with stream.",
                                         "invalid_request_error", "invalid_request", "stream")
                return await streamed("/v1/chat/completions", body, principal, outcome)
            return JSONResponse(await gateway.chat(body, principal, outcome))
        return await handle("chat.completions", request, work)

    @router.post("/v1/completions", responses=ERRORS,
                 openapi_extra=body_of(p.CompletionRequest))
    async def completions(request: Request) -> Response:
        async def work(principal: Principal, outcome: Outcome) -> Response:
            body = await parse(request, p.CompletionRequest, limit)
            if body.stream:
                return await streamed("/v1/completions", body, principal, outcome)
            return JSONResponse(await gateway.completions(body, principal, outcome))
        return await handle("completions", request, work)

    @router.post("/v1/embeddings", responses=ERRORS,
                 openapi_extra=body_of(p.EmbeddingRequest))
    async def embeddings(request: Request) -> Response:
        async def work(principal: Principal, outcome: Outcome) -> Response:
            body = await parse(request, p.EmbeddingRequest, limit)
            return JSONResponse(await gateway.embeddings(body, principal, outcome))
        return await handle("embeddings", request, work)

    @router.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(gateway.metrics.registry),
                        media_type=CONTENT_TYPE_LATEST)

    @router.get("/health", include_in_schema=False)
    async def health() -> dict[str, Any]:
        served = await gateway.pool.served()
        return {"status": "ok", "replicas": [
            {"url": r.url, "healthy": r.healthy, "models": sorted(r.models)}
            for r in gateway.pool.replicas], "models": sorted(served)}

    return router


def make_admin_router(gateway: Gateway) -> APIRouter:
    """Platform admin (admin token) manages everything; a project owner's key manages its
    own project's members, keys and grants."""
    router = APIRouter(prefix="/admin", include_in_schema=False)
    tenancy = gateway.tenancy

    def authorise(request: Request, project: str | None) -> None:
        header = request.headers.get("authorization", "")
        token = header.removeprefix("Bearer ").strip()
        admin = gateway.settings.admin_token
        if admin and token == admin:
            return
        principal = tenancy.authenticate(token) if token else None
        if principal and project and principal.project == project and principal.role == "owner":
            return
        raise p.GatewayError(401 if principal is None else 403, "Admin token or the project "
                             "owner's key required.", "authentication_error", "not_admin")

    async def run(request: Request, project: str | None, action: Callable[[Any], Any],
                  model: type[BaseModel] | None = None) -> Response:
        try:
            authorise(request, project)
            body = await parse(request, model, 65536) if model else None
            return JSONResponse(action(body))
        except p.GatewayError as error:
            return error_response(error)
        except TenancyError as error:
            status = 404 if str(error).startswith("no ") else 400
            return error_response(p.GatewayError(status, str(error), "invalid_request_error"))

    @router.post("/projects")
    async def create_project(request: Request) -> Response:
        return await run(request, None, lambda b: tenancy.create_project(
            b.name, b.owner, b.log_prompts), p.ProjectCreate)

    @router.post("/projects/{project}/members")
    async def add_member(project: str, request: Request) -> Response:
        return await run(request, project, lambda b: tenancy.add_member(project, b.user, b.role),
                         p.MemberAdd)

    @router.post("/projects/{project}/keys")
    async def create_key(project: str, request: Request) -> Response:
        return await run(request, project, lambda b: tenancy.create_key(
            project, b.user, b.name, b.rpm, b.tpm), p.KeyCreate)

    @router.get("/projects/{project}/keys")
    async def list_keys(project: str, request: Request) -> Response:
        return await run(request, project, lambda _: tenancy.list_keys(project))

    @router.post("/projects/{project}/grants")
    async def grant(project: str, request: Request) -> Response:
        return await run(request, project, lambda b: tenancy.grant(project, b.name, b.kind),
                         p.GrantCreate)

    @router.post("/keys/{key_id}/rotate")
    async def rotate(key_id: int, request: Request) -> Response:
        return await run(request, None, lambda _: tenancy.rotate_key(key_id))

    @router.delete("/keys/{key_id}")
    async def revoke(key_id: int, request: Request) -> Response:
        return await run(request, None, lambda _: tenancy.revoke_key(key_id))

    @router.get("/usage")
    async def usage(request: Request, project: str | None = None, day: str | None = None
                    ) -> Response:
        return await run(request, project, lambda _: tenancy.usage(project, day))

    return router
