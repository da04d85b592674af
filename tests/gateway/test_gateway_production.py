"""The gateway's production settings: PostgreSQL for keys and audit, Redis for shared limits."""

import time
import uuid
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.orm import Session

from config.gateway import GatewaySettings
from gateway.db import AuditRecord
from tests.support.gateway_fixtures import serve, tenants
from tests.support.services import PG_URL, REDIS_URL, require_services


@pytest.fixture
def services() -> None:
    require_services()


def test_postgres_audit_and_redis_limits_shared_by_two_gateways(services: None, vllm_url: str,
                                                                tmp_path: Path) -> None:
    settings = GatewaySettings(database_url=PG_URL, rate_limit_backend=REDIS_URL,
                               upstreams=[vllm_url])
    first_server = serve(settings)
    second_server = serve(settings)
    url_a, gw_a = next(first_server)
    url_b, _ = next(second_server)
    try:
        project, _, _, _ = tenants(gw_a, ["math-lora"])
        body = {"model": "math-lora", "max_tokens": 4,
                "messages": [{"role": "user", "content": "2 + 2?"}]}
        for _attempt in range(3):  # limits count per clock minute: retry if one just ended
            window = int(time.time() // 60)
            key = gw_a.tenancy.create_key(project, "alice", name=f"k-{uuid.uuid4().hex[:6]}",
                                          rpm=2)
            headers = {"authorization": f"Bearer {key['key']}"}
            first = httpx.post(f"{url_a}/v1/chat/completions", json=body, headers=headers,
                               timeout=60)
            second = httpx.get(f"{url_b}/v1/models", headers=headers)  # the other gateway
            limited = httpx.get(f"{url_a}/v1/models", headers=headers)  # third in the minute
            if int(time.time() // 60) == window:
                break
        assert first.status_code == 200 and second.status_code == 200
        assert limited.status_code == 429 and "retry-after" in limited.headers
    finally:
        for gen in (first_server, second_server):
            gen.close()
    with Session(create_engine(PG_URL)) as s:
        rows = list(s.scalars(select(AuditRecord).where(AuditRecord.key_id == key["id"])
                              .order_by(AuditRecord.ts)))  # two writers batch apart
        tables = {r[0] for r in s.execute(text(
            "select tablename from pg_tables where tablename like 'gw_%'"))}
    assert [r.status for r in rows] == [200, 200, 429]
    assert rows[0].model == "math-lora" and rows[0].completion_tokens > 0
    assert {"gw_projects", "gw_api_keys", "gw_grants", "gw_audit", "gw_members"} <= tables
