"""Wiring: settings -> database, tenancy, replicas, limiter, metrics -> FastAPI app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from gateway.audit import AuditWriter
from gateway.db import make_engine, session_factory
from gateway.metrics import GatewayMetrics
from gateway.rag import Retriever
from gateway.ratelimit import make_rate_limiter
from gateway.routers import make_admin_router, make_router
from gateway.serving import Gateway
from gateway.settings import GatewaySettings
from gateway.tenancy import Tenancy
from gateway.upstream import ReplicaPool


def build_gateway(settings: GatewaySettings) -> Gateway:
    sessions = session_factory(make_engine(settings.database_url))
    return Gateway(
        settings=settings,
        tenancy=Tenancy(sessions, settings.default_rpm, settings.default_tpm,
                        settings.auth_cache_seconds),
        sessions=sessions,
        pool=ReplicaPool(settings.upstreams, settings.refresh_seconds),
        limiter=make_rate_limiter(settings.rate_limit_backend),
        metrics=GatewayMetrics(),
        retriever=Retriever(settings),
        audit=AuditWriter(sessions),
    )


def create_app(settings: GatewaySettings, gateway: Gateway | None = None) -> FastAPI:
    gateway = gateway or build_gateway(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await gateway.pool.refresh(force=True)
        gateway.audit.start()
        yield
        await gateway.audit.stop()
        await gateway.pool.close()

    app = FastAPI(title="Adapter Factory gateway", version="0.1.0", lifespan=lifespan,
                  description="OpenAI-compatible access to the factory's models and adapters.")
    app.state.gateway = gateway
    app.include_router(make_router(gateway))
    app.include_router(make_admin_router(gateway))
    return app
