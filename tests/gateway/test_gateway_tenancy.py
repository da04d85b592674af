"""A hostile tenant against the gateway: one test per attack of issue #17 and its relatives.

The gateway runs for real (uvicorn, the admin API, the audit writer) in front of a fake vLLM
replica on httpx.MockTransport, so this suite trains nothing and runs in seconds; it runs twice,
on the embedded default (SQLite + in-memory limits) and on PostgreSQL + Redis. The limiter's clock
is pinned to one minute so that no count straddles a window; each test makes its own projects
and keys, and every client comes from its own address (X-Forwarded-For, trusted from 127.0.0.1).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from config.gateway import GatewaySettings, ProjectQuota
from gateway.app import build_gateway
from gateway.db import AdminAuditRecord, AuditRecord
from gateway.serving import Gateway
from gateway.upstream import ReplicaPool
from tests.support.fake_vllm import PROMPT_TOKENS, FakeVLLM
from tests.support.gateway_fixtures import fuzz_without_server_errors
from tests.support.live_server import serve

PG_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
REDIS_URL = "redis://127.0.0.1:6379/0"
ADMIN_ENV, ADMIN_TOKEN = "HOSTILE_TEST_ADMIN_TOKEN", "hostile-admin-" + uuid.uuid4().hex
VLLM_KEY = "vllm-secret-" + uuid.uuid4().hex
REPLICAS = ["http://replica-1:8000", "http://replica-2:8000"]
_addresses = itertools.count(1)


def new_address() -> str:
    n = next(_addresses)
    return f"10.{uuid.uuid4().int % 250}.{n // 250}.{n % 250 + 1}"


@dataclass
class Tenant:
    project: str
    key: str
    key_id: int


@dataclass
class Hostile:
    url: str
    gateway: Gateway
    fake: FakeVLLM
    backend: str

    def client(self, key: str | None = None, address: str | None = None) -> httpx.Client:
        headers = {"x-forwarded-for": address or new_address()}
        if key:
            headers["authorization"] = f"Bearer {key}"
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def admin(self) -> httpx.Client:
        return self.client(ADMIN_TOKEN)

    def tenant(self, grants: tuple[str, ...] = ("adapter-a",), role: str = "owner",
               **quota: int) -> Tenant:
        t = self.gateway.tenancy
        name = f"t-{uuid.uuid4().hex[:10]}"
        t.create_project(name, owner="owner",
                         quota=ProjectQuota(**quota) if quota else None)
        for model in grants:
            t.grant(name, model)
        user = "owner"
        if role != "owner":
            user = f"{role}-user"
            t.add_member(name, user, role)
        key = t.create_key(name, user)
        return Tenant(name, key["key"], key["id"])

    def key(self, tenant: Tenant, **limits: int) -> dict:
        return self.gateway.tenancy.create_key(tenant.project, "owner",
                                               name=uuid.uuid4().hex[:8], **limits)

    def audit(self, key_id: int, expect: int = 0) -> list[AuditRecord]:
        """The key's audit rows, waiting (up to 10 s) for at least `expect` of them: a stream's
        row is queued just after the client has read its end."""
        deadline = time.monotonic() + 10
        while True:
            self.gateway.audit.drain()
            with self.gateway.sessions() as s:
                rows = list(s.scalars(select(AuditRecord).where(AuditRecord.key_id == key_id)
                                      .order_by(AuditRecord.id)))
            if len(rows) >= expect or time.monotonic() > deadline:
                return rows
            time.sleep(0.02)

    def admin_audit(self, project: str) -> list[AdminAuditRecord]:
        self.gateway.audit.drain()
        with self.gateway.sessions() as s:
            return list(s.scalars(select(AdminAuditRecord)
                                  .where(AdminAuditRecord.project == project)
                                  .order_by(AdminAuditRecord.id)))


def settings_for(backend: str, tmp: Path) -> GatewaySettings:
    production = backend == "postgres+redis"
    return GatewaySettings(
        database_url=PG_URL if production else f"sqlite:///{tmp / 'gateway.db'}",
        rate_limit_backend=REDIS_URL if production else "memory",
        upstreams=REPLICAS, refresh_seconds=3600, admin_token_env=ADMIN_ENV,
        auth_failures_per_minute=5, key_max_in_flight=2,
        audit_dead_letter=str(tmp / "audit-dead-letter.jsonl"))


def hostile_gateway(settings: GatewaySettings, fake: FakeVLLM, clock: float) -> Gateway:
    gateway = build_gateway(settings, ReplicaPool(
        settings.upstreams, settings.refresh_seconds, api_key=settings.upstream_api_key,
        transport=fake.transport()))
    gateway.admission.limiter.clock = lambda: clock
    return gateway


@pytest.fixture(scope="module", params=["sqlite+memory", "postgres+redis"])
def hostile(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[Hostile]:
    with pytest.MonkeyPatch.context() as env:  # restored after the module
        env.setenv(ADMIN_ENV, ADMIN_TOKEN)
        env.setenv("FACTORY_VLLM_API_KEY", VLLM_KEY)
        if request.param == "postgres+redis":
            from tests.support.services import require_services
            require_services()
        settings = settings_for(request.param, tmp_path_factory.mktemp("hostile"))
        fake = FakeVLLM()
        clock = (time.time() // 60) * 60 + 1  # one pinned minute: Retry-After is 59
        for url, gateway in serve(settings, hostile_gateway(settings, fake, clock)):
            yield Hostile(url, gateway, fake, request.param)


@pytest.fixture(autouse=True)
def well_behaved_replica(hostile: Hostile) -> None:
    hostile.fake.mode, hostile.fake.chunk_delay_s = "ok", 0.0
    hostile.fake.released.clear()


def chat(model: str = "adapter-a", **extra: object) -> dict:
    return {"model": model, "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}],
            **extra}


def assert_error(r: httpx.Response, status: int, code: str) -> dict:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == code and error["message"] and error["type"], error
    return error


# -- 1. who may grant what ----------------------------------------------------------------------
def test_an_owner_cannot_grant_itself_another_projects_model(hostile: Hostile) -> None:
    victim = hostile.tenant(grants=("adapter-b",))
    attacker = hostile.tenant(grants=("adapter-a",))
    with hostile.client(attacker.key) as c:
        assert_error(c.post(f"/admin/projects/{attacker.project}/grants",
                            json={"name": "adapter-b"}), 403, "not_allowed")
        assert_error(c.post(f"/admin/projects/{attacker.project}/grants",
                            json={"name": "filings", "kind": "collection"}), 403, "not_allowed")
        assert_error(c.post("/v1/chat/completions", json=chat("adapter-b")), 404,
                     "model_not_found")
        # nor act on the victim's project, nor make a project of its own
        assert_error(c.post(f"/admin/projects/{victim.project}/keys", json={"user": "owner"}),
                     403, "not_allowed")
        assert_error(c.post("/admin/projects", json={"name": "mine", "owner": "x"}), 403,
                     "not_allowed")
        assert {m["id"] for m in c.get("/v1/models").json()["data"]} == {"adapter-a"}
    with hostile.client(victim.key) as c:
        assert c.post("/v1/chat/completions", json=chat("adapter-b")).status_code == 200


def test_the_admin_grants_and_takes_grants_back(hostile: Hostile) -> None:
    tenant = hostile.tenant(grants=())
    with hostile.admin() as admin, hostile.client(tenant.key) as c:
        assert admin.post(f"/admin/projects/{tenant.project}/grants",
                          json={"name": "adapter-b"}).status_code == 200
        assert c.post("/v1/chat/completions", json=chat("adapter-b")).status_code == 200
        assert admin.get(f"/admin/projects/{tenant.project}/grants").json() == [
            {"kind": "model", "name": "adapter-b"}]
        r = admin.delete(f"/admin/projects/{tenant.project}/grants/model/adapter-b")
        assert r.status_code == 200 and r.json()["revoked"] is True
        assert_error(c.post("/v1/chat/completions", json=chat("adapter-b")), 404,
                     "model_not_found")
        assert_error(admin.delete(f"/admin/projects/{tenant.project}/grants/model/adapter-b"),
                     404, "not_found")
        # the owner may not take grants back either (nor give them)
        admin.post(f"/admin/projects/{tenant.project}/grants", json={"name": "adapter-a"})
        assert_error(c.delete(f"/admin/projects/{tenant.project}/grants/model/adapter-a"), 403,
                     "not_allowed")


# -- 2. quotas the admin sets -------------------------------------------------------------------
def test_key_limits_are_clamped_to_the_projects_and_keys_are_capped(hostile: Hostile) -> None:
    tenant = hostile.tenant(rpm=50, tpm=5000, max_keys=3, max_in_flight=4)
    with hostile.client(tenant.key) as owner:
        r = owner.post(f"/admin/projects/{tenant.project}/keys",
                       json={"user": "owner", "rpm": 10**9, "tpm": 10**9})
        assert r.status_code == 200 and (r.json()["rpm"], r.json()["tpm"]) == (50, 5000)
        assert owner.post(f"/admin/projects/{tenant.project}/keys",
                          json={"user": "owner"}).status_code == 200
        assert_error(owner.post(f"/admin/projects/{tenant.project}/keys",
                                json={"user": "owner"}), 403, "quota_exceeded")
        # the tenant cannot raise its own ceilings
        assert_error(owner.put(f"/admin/projects/{tenant.project}/quota",
                               json={"max_keys": 100}), 403, "not_allowed")
        assert owner.get(f"/admin/projects/{tenant.project}/quota").json()["max_keys"] == 3
    # rotation replaces a key at the ceiling; lowering a ceiling clamps existing keys at once
    with hostile.admin() as admin:
        assert admin.post(f"/admin/keys/{tenant.key_id}/rotate").status_code == 200
        assert admin.put(f"/admin/projects/{tenant.project}/quota",
                         json={"rpm": 2}).json()["rpm"] == 2
    principal = hostile.gateway.tenancy.authenticate(r.json()["key"])
    assert principal is not None and principal.rpm == 2


def test_the_projects_ceiling_holds_across_its_keys(hostile: Hostile) -> None:
    tenant = hostile.tenant(rpm=3)
    second = hostile.key(tenant)
    with hostile.client(tenant.key) as first, hostile.client(second["key"]) as other:
        assert first.get("/v1/models").status_code == 200
        assert first.get("/v1/models").status_code == 200
        assert other.get("/v1/models").status_code == 200
        r = other.get("/v1/models")  # this key's 2nd request, the project's 4th
    assert_error(r, 429, "rate_limit_exceeded")
    assert r.headers["retry-after"] == "59"


def test_the_projects_ceiling_holds_across_gateway_replicas(hostile: Hostile,
                                                            tmp_path: Path) -> None:
    if hostile.backend != "postgres+redis":
        pytest.skip("in-memory limits belong to one gateway process by design")
    tenant = hostile.tenant(rpm=2)
    settings = hostile.gateway.settings
    clock = hostile.gateway.admission.limiter.clock()
    for url, _ in serve(settings, hostile_gateway(settings, hostile.fake, clock)):
        with hostile.client(tenant.key) as a, httpx.Client(
                base_url=url, headers={"authorization": f"Bearer {tenant.key}"}) as b:
            assert a.get("/v1/models").status_code == 200
            assert b.get("/v1/models").status_code == 200
            assert_error(a.get("/v1/models"), 429, "rate_limit_exceeded")


# -- 3. a quiet public surface ------------------------------------------------------------------
def test_health_and_metrics_tell_outsiders_nothing(hostile: Hostile) -> None:
    tenant = hostile.tenant()
    with hostile.client() as anonymous, hostile.client(tenant.key) as tenant_client:
        health = anonymous.get("/health")
        assert health.status_code == 200 and health.json() == {"status": "ok"}
        assert_error(anonymous.get("/metrics"), 401, "not_admin")
        assert_error(tenant_client.get("/metrics"), 401, "not_admin")
        # a name the client chose never becomes a metric label
        for i in range(3):
            tenant_client.post("/v1/chat/completions", json=chat(f"probe-{i}-{uuid.uuid4()}"))
        tenant_client.post("/v1/chat/completions", json=chat())
    with hostile.admin() as admin:
        detail = admin.get("/health").json()
        metrics = admin.get("/metrics").text
    assert {r["url"] for r in detail["replicas"]} == set(REPLICAS)
    assert "probe-" not in metrics and 'model="other"' in metrics
    assert 'model="adapter-a"' in metrics


# -- 4. one request, bounded work -----------------------------------------------------------------
def test_one_request_cannot_buy_unbounded_work(hostile: Hostile) -> None:
    tenant = hostile.tenant()
    small = hostile.key(hostile.tenant(), tpm=1000)
    limits = hostile.gateway.settings.limits
    before = len(hostile.fake.requests)
    with hostile.client(tenant.key) as c:
        assert_error(c.post("/v1/completions", json={
            "model": "adapter-a", "prompt": ["2+2="] * (limits.max_prompts + 1),
            "max_tokens": 4}), 400, "too_many_prompts")
        assert_error(c.post("/v1/completions", json={
            "model": "adapter-a", "prompt": "2+2=", "n": limits.max_n + 1}), 400, "n_too_large")
    small_project = hostile.gateway.tenancy.authenticate(small["key"])
    assert small_project is not None
    hostile.gateway.tenancy.grant(small_project.project, "adapter-a")
    with hostile.client(small["key"]) as c:
        # 4 prompts x n 4 x 100 tokens = 1600 > the key's 1000 per minute, whatever it says
        r = c.post("/v1/completions", json={"model": "adapter-a", "prompt": ["2+2="] * 4,
                                            "n": 4, "max_tokens": 100})
        assert_error(r, 400, "request_exceeds_token_limit")
    assert len(hostile.fake.requests) == before  # nothing reached the engine


def test_tokens_are_reserved_before_the_engine_runs_and_settled_after(hostile: Hostile) -> None:
    tenant = hostile.tenant()
    key = hostile.key(tenant, tpm=1000)
    body = chat(max_tokens=600)
    hostile.fake.mode = "hold"

    engine_saw = len(hostile.fake.requests)

    async def two_at_once() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=hostile.url, timeout=30, headers={
                "authorization": f"Bearer {key['key']}",
                "x-forwarded-for": new_address()}) as c:
            first = asyncio.ensure_future(c.post("/v1/chat/completions", json=body))
            while len(hostile.fake.requests) == engine_saw:  # the first one is running
                await asyncio.sleep(0.01)
            second = await c.post("/v1/chat/completions", json=body)  # 600 more: over 1000
            hostile.fake.released.set()
            return [await first, second]

    first, second = asyncio.run(two_at_once())
    assert first.status_code == 200
    assert_error(second, 429, "rate_limit_exceeded")
    # settled to what the engine reported (10 + 5 tokens), so 600 fit again
    with hostile.client(key["key"]) as c:
        assert c.post("/v1/chat/completions", json=body).status_code == 200
    rows = hostile.audit(key["id"])
    assert [r.status for r in rows] == [429, 200, 200]
    assert rows[1].prompt_tokens == PROMPT_TOKENS and rows[1].completion_tokens == 5


# -- 5. bad bodies are 4xx, and audited as what they got ----------------------------------------
@pytest.mark.parametrize("raw", [
    b"[" * 50_000 + b"]" * 50_000,
    b'{"model": "adapter-a", "messages": [], "max_tokens": ' + b"9" * 5000 + b"}",
    b'{"model": "adapter-a", "temperature": NaN, "messages": []}',
    b'{"model": "adapter-a", "temperature": 1e999, "messages": []}',
    b'{"a":' * 40 + b"1" + b"}" * 40,
    b"\xff\xfe not utf-8",
], ids=["deep-array", "5000-digits", "nan", "inf", "deep-object", "not-utf8"])
def test_hostile_bodies_are_400_and_audited_as_400(hostile: Hostile, raw: bytes) -> None:
    tenant = hostile.tenant()
    with hostile.client(tenant.key) as c:
        r = c.post("/v1/chat/completions", content=raw,
                   headers={"content-type": "application/json"})
    assert_error(r, 400, "invalid_json")
    assert [row.status for row in hostile.audit(tenant.key_id)] == [400]


@pytest.mark.parametrize("rpm", ["1e20", "1" + "0" * 30, "-1", "2147483648", '"many"'])
def test_admin_api_refuses_out_of_range_numbers(hostile: Hostile, rpm: str) -> None:
    tenant = hostile.tenant()
    with hostile.admin() as admin:
        r = admin.post(f"/admin/projects/{tenant.project}/keys",
                       content=f'{{"user": "owner", "rpm": {rpm}}}',
                       headers={"content-type": "application/json"})
        assert r.status_code == 400, r.text
        r = admin.put(f"/admin/projects/{tenant.project}/quota",
                      content=f'{{"tpm": {rpm}}}', headers={"content-type": "application/json"})
        assert r.status_code == 400, r.text
    assert [row.status for row in hostile.admin_audit(tenant.project)] == [400, 400]


def test_unknown_routes_and_methods_answer_in_openai_format(hostile: Hostile) -> None:
    with hostile.admin() as admin:
        assert_error(admin.get("/v1/nothing-here"), 404, "not_found")
        assert_error(admin.delete("/v1/models"), 405, "method_not_allowed")
        assert_error(admin.post("/admin/keys/99999999999999999999/rotate"), 404, "not_found")
        assert_error(admin.post("/admin/keys/%00/rotate"), 404, "not_found")
        # found by the schema fuzzer: '²' is a digit to str.isdigit() but not to int()
        assert_error(admin.delete("/admin/keys/%C2%B2"), 404, "not_found")
        assert_error(admin.get("/admin/projects/%00x/keys"), 404, "not_found")


# -- 6. streams are billed for what was sent ---------------------------------------------------
def test_a_client_that_hangs_up_is_billed_for_what_it_received(hostile: Hostile) -> None:
    tenant = hostile.tenant()
    hostile.fake.chunk_delay_s, hostile.fake.answer_tokens = 0.05, 40
    try:
        with hostile.client(tenant.key) as c, c.stream(
                "POST", "/v1/chat/completions", json=chat(max_tokens=40, stream=True)) as r:
            assert r.status_code == 200
            lines = r.iter_lines()
            received = [line for line in itertools.islice(lines, 6) if line.startswith("data")]
        # hung up after a few chunks: the gateway closes upstream and bills what it relayed
        rows = hostile.audit(tenant.key_id, expect=1)
    finally:
        hostile.fake.answer_tokens = 5
    assert rows and rows[0].status == 200
    assert rows[0].prompt_tokens > 0
    assert len(received) <= rows[0].completion_tokens < 40


def test_a_fully_read_stream_counts_against_the_token_limit(hostile: Hostile) -> None:
    tenant = hostile.tenant()
    key = hostile.key(tenant, tpm=30)
    body = chat(max_tokens=5, stream=True)  # the engine bills 10 prompt + 5 tokens
    with hostile.client(key["key"]) as c:
        first = c.post("/v1/chat/completions", json=body)
        assert first.status_code == 200 and "[DONE]" in first.text
        second = c.post("/v1/chat/completions", json=body)
    assert second.status_code == 200
    rows = hostile.audit(key["id"], expect=2)
    assert sum(r.prompt_tokens + r.completion_tokens for r in rows) == 30
    with hostile.client(key["key"]) as c:
        assert_error(c.post("/v1/chat/completions", json=body), 429, "rate_limit_exceeded")


# -- 7. rejected requests are limited too -------------------------------------------------------
def test_rejected_requests_count_against_the_rate_limit(hostile: Hostile) -> None:
    tenant = hostile.tenant()
    key = hostile.key(tenant, rpm=3)
    with hostile.client(key["key"]) as c:
        statuses = [c.post("/v1/chat/completions", json=chat("no-such-model")).status_code
                    for _ in range(3)]
        statuses.append(c.post("/v1/chat/completions", content=b"{bad").status_code)
    assert statuses == [404, 404, 404, 429]
    assert [r.status for r in hostile.audit(key["id"])] == statuses


def test_failed_authentication_is_limited_per_client_address(hostile: Hostile) -> None:
    tenant = hostile.tenant()
    attacker = new_address()
    limit = hostile.gateway.settings.auth_failures_per_minute
    with hostile.client(f"af-guess-{uuid.uuid4().hex}", address=attacker) as c:
        statuses = [c.get("/v1/models").status_code for _ in range(limit + 1)]
    assert statuses == [401] * limit + [429]
    with hostile.client(tenant.key, address=attacker) as c:  # even a valid key, from there
        assert_error(c.get("/v1/models"), 429, "too_many_auth_failures")
    with hostile.client(address=attacker) as c:  # the admin API shares the count
        assert_error(c.get(f"/admin/projects/{tenant.project}/keys",
                           headers={"authorization": "Bearer nope"}), 429,
                     "too_many_auth_failures")
    with hostile.client(tenant.key) as c:  # everyone else is unaffected
        assert c.get("/v1/models").status_code == 200


# -- 8. admin actions are audited ---------------------------------------------------------------
def test_every_admin_call_leaves_an_audit_row(hostile: Hostile) -> None:
    tenant = hostile.tenant()
    with hostile.admin() as admin:
        key = admin.post(f"/admin/projects/{tenant.project}/keys",
                         json={"user": "owner", "name": "ci"}).json()
        admin.post(f"/admin/keys/{key['id']}/rotate")
        admin.post(f"/admin/projects/{tenant.project}/grants", json={"name": "adapter-b"})
    with hostile.client(tenant.key) as owner:
        owner.post(f"/admin/projects/{tenant.project}/members",
                   json={"user": "bob", "role": "member"})
        owner.delete(f"/admin/keys/{tenant.key_id}")
    with hostile.client("wrong-admin-token") as guesser:
        guesser.post(f"/admin/projects/{tenant.project}/grants", json={"name": "adapter-b"})
    rows = [(r.actor, r.action, r.status) for r in hostile.admin_audit(tenant.project)]
    assert rows == [
        ("admin", "key.create", 200), ("admin", "key.rotate", 200),
        ("admin", "grant.create", 200), (f"key:{tenant.key_id}", "member.add", 200),
        (f"key:{tenant.key_id}", "key.revoke", 200),
        ("unauthenticated", "grant.create", 401)]
    assert all(r.client and r.ts for r in hostile.admin_audit(tenant.project))


# -- 9. names with control characters; a row the database refuses --------------------------------
@pytest.mark.parametrize("name", ["adapter-a\u0000", "adapter-a\n", "\u0000", "adapter-a\t",
                                  "adapter-a\u202e"])
def test_control_characters_in_names_never_reach_the_audit_log(hostile: Hostile,
                                                               name: str) -> None:
    tenant = hostile.tenant()
    with hostile.client(tenant.key) as c:
        assert_error(c.post("/v1/chat/completions", json=chat(name)), 404, "model_not_found")
    rows = hostile.audit(tenant.key_id)
    assert [(r.status, r.model) for r in rows] == [(404, "(invalid name)")]


def test_a_row_the_database_refuses_goes_to_the_dead_letter_file(hostile: Hostile) -> None:
    tenant = hostile.tenant()
    audit = hostile.gateway.audit
    dead = audit.dead_letter
    before = dead.read_text().splitlines() if dead.exists() else []
    audit.drain()
    audit.add(AuditRecord(ts=time.time(), day="2026-11-29", route=None, status=200,
                          project_id=None, key_id=tenant.key_id))  # route is NOT NULL
    with hostile.client(tenant.key) as c:
        assert c.get("/v1/models").status_code == 200  # queued behind the bad row
    rows = hostile.audit(tenant.key_id)
    assert [r.route for r in rows] == ["models"]
    buried = dead.read_text().splitlines()[len(before):]
    assert len(buried) == 1 and json.loads(buried[0])["key_id"] == tenant.key_id
    assert json.loads(buried[0])["reason"]
    with hostile.client(tenant.key) as c:  # and logging goes on
        c.get("/v1/models")
    assert len(hostile.audit(tenant.key_id)) == 2


# -- 10. bodies, concurrency, slow replicas -----------------------------------------------------
def test_the_body_limit_holds_while_reading(hostile: Hostile) -> None:
    tenant = hostile.tenant()
    limit = hostile.gateway.settings.limits.max_body_bytes
    sent = []

    def endless() -> Iterator[bytes]:
        for _ in range(10 * limit // 65536):
            sent.append(65536)
            yield b" " * 65536

    with hostile.client(tenant.key) as c:
        r = c.post("/v1/chat/completions", content=endless(),
                   headers={"content-type": "application/json"})
        assert_error(r, 413, "request_too_large")
    assert sum(sent) < 10 * limit  # refused mid-upload, not after reading it all
    assert [row.status for row in hostile.audit(tenant.key_id)] == [413]


def test_requests_in_flight_are_limited_per_key(hostile: Hostile) -> None:
    tenant = hostile.tenant()
    hostile.fake.mode = "hold"
    most = hostile.gateway.settings.key_max_in_flight

    async def flood() -> list[int]:
        async with httpx.AsyncClient(base_url=hostile.url, timeout=30, headers={
                "authorization": f"Bearer {tenant.key}",
                "x-forwarded-for": new_address()}) as c:
            held = [asyncio.ensure_future(c.post("/v1/chat/completions", json=chat()))
                    for _ in range(most)]
            while len(hostile.fake.sent("/v1/chat/completions")) < most:
                await asyncio.sleep(0.01)
            extra = await c.post("/v1/chat/completions", json=chat())
            hostile.fake.released.set()
            return [extra.status_code, *[(await h).status_code for h in held]]

    hostile.fake.requests.clear()
    statuses = asyncio.run(flood())
    assert statuses == [429] + [200] * most
    with hostile.client(tenant.key) as c:  # slots are given back
        assert c.post("/v1/chat/completions", json=chat()).status_code == 200


def test_a_read_timeout_is_not_replayed_and_keeps_the_replica(hostile: Hostile) -> None:
    tenant = hostile.tenant()
    hostile.fake.mode = "timeout"
    hostile.fake.requests.clear()
    with hostile.client(tenant.key) as c:
        assert_error(c.post("/v1/chat/completions", json=chat()), 504, "upstream_timeout")
        assert len(hostile.fake.sent("/v1/chat/completions")) == 1  # not replayed
        assert all(r.healthy for r in hostile.gateway.pool.replicas)
        hostile.fake.mode = "ok"
        assert c.post("/v1/chat/completions", json=chat()).status_code == 200


# -- 11. vLLM never reachable around the gateway ------------------------------------------------
def test_the_gateway_sends_the_replicas_api_key(hostile: Hostile) -> None:
    tenant = hostile.tenant()
    with hostile.client(tenant.key) as c:
        c.post("/v1/chat/completions", json=chat())
    assert hostile.fake.headers[-1]["authorization"] == f"Bearer {VLLM_KEY}"


def test_rendered_launches_bind_privately_and_require_the_key() -> None:
    import subprocess

    import yaml

    from resources.vllm_launch import Artifact, GpuLaunch

    launch = GpuLaunch("prod", Artifact("base", "s3://b/base/v1", "v1"), "s3://b", [8],
                       512, 4, [])
    deployment, service, policy = yaml.safe_load_all(launch.kubernetes())
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    args, env = container["args"], {e["name"]: e for e in container["env"]}
    assert args[args.index("--host") + 1] == "$(POD_IP)"
    assert env["VLLM_API_KEY"]["valueFrom"]["secretKeyRef"]["name"] == launch.api_key_secret
    assert service["spec"]["type"] == "ClusterIP"
    assert policy["kind"] == "NetworkPolicy"
    assert policy["spec"]["ingress"][0]["from"] == [
        {"podSelector": {"matchLabels": {"adapter-factory.io/platform": "true"}}}]
    docker = launch.docker_script()
    assert '-p "${VLLM_BIND_ADDRESS:-127.0.0.1}":8000:8000' in docker
    assert "-e VLLM_API_KEY " in docker and "0.0.0.0:8000" not in docker
    user_data = launch.ec2_user_data()
    assert "meta-data/local-ipv4" in user_data and "aws ssm get-parameter" in user_data
    for script in (docker, user_data):
        subprocess.run(["bash", "-n"], input=script.encode(), check=True)
    # without the key, the script refuses to start vLLM
    run = subprocess.run(["bash", "-c", docker.split("export VLLM_API_KEY")[0]],
                         capture_output=True, text=True, env={"PATH": os.environ["PATH"]})
    assert run.returncode != 0 and "VLLM_API_KEY" in run.stderr


# -- 13. smaller ones ----------------------------------------------------------------------------
def test_a_stream_refused_upstream_keeps_its_status(hostile: Hostile) -> None:
    tenant = hostile.tenant()
    hostile.fake.mode = "reject"
    with hostile.client(tenant.key) as c:
        r = c.post("/v1/chat/completions", json=chat(stream=True))
    error = assert_error(r, 400, "upstream_error")
    assert "maximum context length" in error["message"]
    assert [row.status for row in hostile.audit(tenant.key_id)] == [400]


def test_what_is_forwarded_is_what_openai_defines(hostile: Hostile) -> None:
    tenant = hostile.tenant()
    with hostile.client(tenant.key) as c:
        assert c.post("/v1/chat/completions", json=chat(
            max_tokens=None, max_completion_tokens=3, return_token_ids=True,
            stream=True, stream_options={"include_usage": True, "continuous_usage_stats": True,
                                         "evil": 1})).status_code == 200
        too_many = c.post("/v1/chat/completions", json=chat(
            max_tokens=None, max_completion_tokens=10**6))
    sent = hostile.fake.sent("/v1/chat/completions")[-1]
    assert sent["max_tokens"] == 3 and "max_completion_tokens" not in sent
    assert "return_token_ids" not in sent
    assert sent["stream_options"] == {"include_usage": True}
    assert_error(too_many, 400, "max_tokens_too_large")


def test_viewers_read_their_projects_usage(hostile: Hostile) -> None:
    tenant = hostile.tenant()
    viewer = hostile.gateway.tenancy
    viewer.add_member(tenant.project, "vera", "viewer")
    vkey = viewer.create_key(tenant.project, "vera")["key"]
    with hostile.client(tenant.key) as c:
        assert c.post("/v1/chat/completions", json=chat()).status_code == 200
    hostile.gateway.audit.drain()
    other = hostile.tenant()
    with hostile.client(vkey) as v:
        assert_error(v.post("/v1/chat/completions", json=chat()), 403, "insufficient_role")
        usage = v.get("/v1/usage").json()
        assert usage["project"] == tenant.project
        assert sum(u["requests"] for u in usage["data"]) >= 1
        assert v.get("/admin/usage", params={"project": tenant.project}).status_code == 200
        assert_error(v.get("/admin/usage", params={"project": other.project}), 403,
                     "not_allowed")
        assert_error(v.get("/admin/usage"), 403, "not_allowed")  # everyone's: admin only
        assert_error(v.post(f"/admin/projects/{tenant.project}/keys", json={"user": "vera"}),
                     403, "not_allowed")


# -- beyond the list -----------------------------------------------------------------------------
def test_key_ids_of_other_projects_look_like_missing_ones(hostile: Hostile) -> None:
    victim = hostile.tenant()
    attacker = hostile.tenant()
    with hostile.client(attacker.key) as c:
        theirs = c.delete(f"/admin/keys/{victim.key_id}")
        missing = c.delete("/admin/keys/2147483000")
    assert_error(theirs, 404, "not_found")
    assert_error(missing, 404, "not_found")
    with hostile.client(victim.key) as c:
        assert c.get("/v1/models").status_code == 200  # still works


def test_schema_fuzzing_of_v1_and_admin_finds_no_server_errors(hostile: Hostile) -> None:
    import schemathesis

    tenant = hostile.tenant()
    hostile.gateway.tenancy.set_quota(tenant.project, rpm=100_000, tpm=10**8, max_keys=10_000)
    public = httpx.get(f"{hostile.url}/openapi.json").json()
    admin = httpx.get(f"{hostile.url}/admin/openapi.json",
                      headers={"authorization": f"Bearer {ADMIN_TOKEN}"}).json()
    operations = [r.ok() for schema in (public, admin)
                  for r in schemathesis.openapi.from_dict(schema).get_all_operations()]
    names = {f"{o.method.upper()} {o.path}" for o in operations}
    assert {"POST /admin/projects", "POST /admin/projects/{project}/keys",
            "DELETE /admin/keys/{key_id}", "POST /v1/chat/completions"} <= names
    fuzz_without_server_errors(hostile.url, operations, lambda path: {
        "authorization": f"Bearer {ADMIN_TOKEN if path.startswith('/admin') else tenant.key}",
        "x-forwarded-for": new_address()})


def test_only_the_admin_reads_the_admin_apis_schema(hostile: Hostile) -> None:
    tenant = hostile.tenant()
    public = httpx.get(f"{hostile.url}/openapi.json").json()
    assert "/v1/chat/completions" in public["paths"]
    assert not [path for path in public["paths"] if path.startswith("/admin")]
    with hostile.client(tenant.key) as c:
        assert_error(c.get("/admin/openapi.json"), 401, "not_admin")
    with hostile.client(ADMIN_TOKEN) as c:
        admin = c.get("/admin/openapi.json").json()
    assert "/admin/projects/{project}/keys" in admin["paths"]


def test_usage_days_must_be_calendar_days(hostile: Hostile) -> None:
    tenant = hostile.tenant()
    with hostile.client(tenant.key) as c:
        assert_error(c.get("/v1/usage", params={"day": "2026-13-45"}), 400, "invalid_request")
        assert_error(c.get("/v1/usage", params={"day": "2026-02-30"}), 400, "invalid_request")
        assert c.get("/v1/usage", params={"day": "2026-02-28"}).status_code == 200
    with hostile.client(ADMIN_TOKEN) as c:
        assert c.get("/admin/usage", params={"day": "2026-13-45"}).status_code == 400


def test_traffic_per_model_is_the_platform_admins_to_read(hostile: Hostile) -> None:
    """What hot_adapters weighs: every project's traffic, so never a tenant's to read."""
    tenant = hostile.tenant()
    with hostile.client(tenant.key) as c:
        assert c.post("/v1/chat/completions", json=chat()).status_code == 200
        assert_error(c.get("/admin/traffic"), 403, "not_allowed")
    hostile.gateway.audit.drain()
    with hostile.client(ADMIN_TOKEN) as c:
        traffic = c.get("/admin/traffic", params={"since": "0"}).json()
        for since in ("yesterday", "nan", "-1", "inf"):
            assert_error(c.get("/admin/traffic", params={"since": since}), 400,
                         "invalid_request")
    assert traffic["models"]["adapter-a"]["requests"] >= 1


# -- the playground's reads: cards and collections stay inside the project ----------------------
def test_model_cards_and_collections_are_the_projects_own(hostile: Hostile, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    store = tmp_path / "store"
    (store / "registry").mkdir(parents=True)
    (store / "adapter" / "adapter-a" / "v2").mkdir(parents=True)
    (store / "adapter" / "adapter-a" / "v2" / "README.md").write_text("---\nlibrary_name: peft\n"
                                                                      "---\n# adapter-a (v2)")
    (store / "registry" / "adapter-a.json").write_text(json.dumps(
        {"champion": {"version": "v2", "prefix": "adapter/adapter-a/v2"}, "history": []}))
    monkeypatch.setattr(hostile.gateway.cards.store, "url", f"file://{store}")
    ours = hostile.tenant(grants=("adapter-a", "adapter-b"))
    theirs = hostile.tenant(grants=("adapter-b",))
    hostile.gateway.tenancy.grant(ours.project, "handbook", kind="collection")
    hostile.gateway.tenancy.grant(theirs.project, "secrets", kind="collection")
    with hostile.client(ours.key) as c:
        card = c.get("/v1/models/adapter-a/card").json()
        assert card["markdown"].endswith("# adapter-a (v2)") and card["id"] == "adapter-a"
        assert_error(c.get("/v1/models/adapter-b/card"), 404, "card_not_found")  # no champion
        assert [x["id"] for x in c.get("/v1/collections").json()["data"]] == ["handbook"]
    with hostile.client(theirs.key) as c:
        # a model the project was not granted looks exactly like one that does not exist
        assert_error(c.get("/v1/models/adapter-a/card"), 404, "model_not_found")
        assert_error(c.get("/v1/models/..%2Fregistry/card"), 404, "not_found")
        assert_error(c.get("/v1/models/registry%5Cx/card"), 404, "model_not_found")
        assert [x["id"] for x in c.get("/v1/collections").json()["data"]] == ["secrets"]
    with hostile.client() as c:
        assert c.get("/v1/collections").status_code == 401
    routes = [r.route for r in hostile.audit(ours.key_id, expect=3)]
    assert routes.count("models.card") == 2 and "collections" in routes
