"""Wiring: settings -> database, tenancy, replicas, admission, metrics -> FastAPI app."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, ClassVar

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from config.gateway import GatewaySettings
from gateway.admin import make_admin_router
from gateway.admission import Admission
from gateway.audit import AuditWriter
from gateway.db import make_engine, session_factory
from gateway.metrics import GatewayMetrics
from gateway.protocol import GatewayError
from gateway.rag import Retriever
from gateway.ratelimit import make_rate_limiter
from gateway.routers import error_response, internal_error, is_admin, make_router
from gateway.serving import Gateway
from gateway.studio.router import make_studio_router, studio_page
from gateway.studio.service import Studio
from gateway.tenancy import Tenancy
from gateway.upstream import PublishedReplicas, ReplicaPool
from store.reader import ArtifactReader

log = logging.getLogger("gateway")


def build_gateway(settings: GatewaySettings, pool: ReplicaPool | None = None) -> Gateway:
    """Everything from settings; `pool` replaces the replicas (a test's fake engine)."""
    sessions = session_factory(make_engine(settings.database_url))
    return Gateway(
        settings=settings,
        tenancy=Tenancy(sessions, settings.default_rpm, settings.default_tpm,
                        settings.auth_cache_seconds, settings.project_quota),
        sessions=sessions,
        pool=pool or ReplicaPool(
            settings.upstreams, settings.refresh_seconds, api_key=settings.upstream_api_key,
            directory=None if settings.upstreams else PublishedReplicas(
                ArtifactReader(settings.object_store, settings.s3_endpoint_url))),
        admission=Admission(settings, make_rate_limiter(settings.rate_limit_backend)),
        metrics=GatewayMetrics(),
        retriever=Retriever(settings),
        audit=AuditWriter(sessions, settings.audit_dead_letter),
    )


def openai_errors(app: FastAPI) -> None:
    """Whatever FastAPI or Starlette answer themselves (unknown route, wrong method, a bad
    query parameter, an unexpected exception) also comes in OpenAI's error format."""
    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(GatewayError(exc.status_code, str(exc.detail),
                                           "invalid_request_error", code))

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        param = ".".join(str(x) for x in first["loc"][1:]) or None
        return error_response(GatewayError(400, f"Invalid request: {param}: {first['msg']}",
                                           "invalid_request_error", "invalid_request", param))

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error", exc_info=exc)
        return error_response(internal_error())


PLAYGROUND = Path(__file__).with_name("playground")


class PlaygroundFiles(StaticFiles):
    """The playground's files, with headers that keep the page's key to itself: its own scripts
    only (no inline code, nothing from elsewhere), no framing, no referrer; `blob:` media only
    so that a person can play back what they just recorded."""

    HEADERS: ClassVar[dict[str, str]] = {
        "content-security-policy": "default-src 'self'; img-src 'self' data:; "
                                   "media-src 'self' blob:; frame-ancestors 'none'; "
                                   "base-uri 'none'; form-action 'self'",
        "x-content-type-options": "nosniff",
        "referrer-policy": "no-referrer",
        "cache-control": "no-cache",
    }

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers.update(self.HEADERS)
        return response


def admin_schema(app: FastAPI, admin: APIRouter, gateway: Gateway) -> None:
    """The admin API's OpenAPI document, for the platform admin only: the public
    /openapi.json describes /v1, and a tenant learns nothing of the admin routes from it."""
    @app.get("/admin/openapi.json", include_in_schema=False)
    async def admin_openapi(request: Request) -> Response:
        if not is_admin(request, gateway):
            return error_response(GatewayError(401, "The admin API's schema needs the admin "
                                                    "token.", "authentication_error",
                                               "not_admin"))
        return JSONResponse(get_openapi(title=f"{app.title}: admin API", version=app.version,
                                        routes=admin.routes))


def create_app(settings: GatewaySettings, gateway: Gateway | None = None,
               studio: Studio | None = None) -> FastAPI:
    """`studio` replaces the Studio (a test's, with a recording Dagster)."""
    gateway = gateway or build_gateway(settings)
    studio = studio or Studio(settings, gateway.tenancy, gateway.retriever,
                              kept=gateway.stored)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await gateway.pool.refresh(force=True)
        gateway.audit.start()
        yield
        await gateway.audit.stop()
        await gateway.pool.close()
        gateway.tracing.shutdown()

    app = FastAPI(title="Adapter Factory gateway", version="0.1.0", lifespan=lifespan,
                  description="OpenAI-compatible access to the factory's models and adapters.")
    app.state.gateway = gateway
    app.include_router(make_router(gateway))
    admin = make_admin_router(gateway)
    app.include_router(admin, include_in_schema=False)
    admin_schema(app, admin, gateway)
    app.include_router(make_studio_router(gateway, studio))
    studio_page(app.router)
    app.mount("/playground", PlaygroundFiles(directory=PLAYGROUND, html=True), name="playground")
    openai_errors(app)
    return app
