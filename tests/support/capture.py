"""A real gateway (uvicorn, SQLite or PostgreSQL) in front of the fake vLLM replica, with
projects whose capture policy a test chooses: what the stored-completions tests and the
feedback-dataset tests share."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai

from config.gateway import GatewaySettings, ProjectQuota
from gateway.app import build_gateway
from gateway.serving import Gateway
from gateway.upstream import ReplicaPool
from tests.support.fake_vllm import FakeVLLM
from tests.support.live_server import serve

PG_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
ADMIN_ENV = "CAPTURE_TEST_ADMIN_TOKEN"
ADMIN_TOKEN = "capture-admin-" + uuid.uuid4().hex
REPLICA = "http://replica-1:8000"


@dataclass
class Tenant:
    project: str
    key: str
    user: str


@dataclass
class Running:
    """The gateway, its fake engine, and helpers to make projects and call it."""

    url: str
    gateway: Gateway
    fake: FakeVLLM

    def project(self, capture: str = "request", scrub_pii: bool = False,
                grants: tuple[str, ...] = ("adapter-a", "adapter-b"), **quota: int) -> Tenant:
        t = self.gateway.tenancy
        name = f"c-{uuid.uuid4().hex[:10]}"
        t.create_project(name, owner="owner", quota=ProjectQuota(**quota) if quota else None)
        for model in grants:
            t.grant(name, model)
        t.set_capture(name, capture, scrub_pii)
        return Tenant(name, t.create_key(name, "owner")["key"], "owner")

    def member(self, tenant: Tenant, user: str, role: str) -> Tenant:
        t = self.gateway.tenancy
        t.add_member(tenant.project, user, role)
        return Tenant(tenant.project, t.create_key(tenant.project, user)["key"], user)

    def openai(self, tenant: Tenant) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=tenant.key, max_retries=0)

    def ask(self, tenant: Tenant, text: str, **extra: object) -> dict:
        """A kept chat (`store: true`); the gateway's answer."""
        with self.http(tenant.key) as http:
            r = http.post("/v1/chat/completions", json={
                "model": "adapter-a", "max_tokens": 4, "store": True,
                "messages": [{"role": "user", "content": text}], **extra})
        assert r.status_code == 200, r.text
        return r.json()

    def rate(self, tenant: Tenant, completion_id: str, **feedback: object) -> dict:
        with self.http(tenant.key) as http:
            r = http.post(f"/v1/chat/completions/{completion_id}/feedback", json=feedback)
        assert r.status_code == 200, r.text
        return r.json()

    def http(self, key: str | None = None) -> httpx.Client:
        headers = {"authorization": f"Bearer {key or ADMIN_TOKEN}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


def settings_for(database: str, tmp: Path) -> GatewaySettings:
    return GatewaySettings(
        database_url=PG_URL if database == "postgres" else f"sqlite:///{tmp / 'gateway.db'}",
        upstreams=[REPLICA], refresh_seconds=3600, admin_token_env=ADMIN_ENV,
        audit_dead_letter=str(tmp / "audit-dead-letter.jsonl"))


def running_gateway(database: str, tmp: Path) -> Iterator[Running]:
    """Serve a gateway on `database` (sqlite | postgres) until resumed; the caller sets
    ADMIN_ENV (a fixture's monkeypatch)."""
    if database == "postgres":
        from tests.support.services import require_services
        require_services()
    settings = settings_for(database, tmp)
    fake = FakeVLLM()
    gateway = build_gateway(settings, ReplicaPool(settings.upstreams, settings.refresh_seconds,
                                                  transport=fake.transport()))
    for url, served in serve(settings, gateway):
        yield Running(url, served, fake)
