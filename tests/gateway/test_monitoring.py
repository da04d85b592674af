"""The gateway's monitor read-out (issue #44) against what was sent: requests, errors by kind,
refusals, latency and TTFT percentiles, tokens, feedback rate and mean score, per model and
window; the admin's alone. A real gateway (uvicorn, SQLite) in front of the fake engine."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support.capture import ADMIN_ENV, ADMIN_TOKEN, Running, running_gateway


@pytest.fixture(scope="module")
def kept(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    with pytest.MonkeyPatch.context() as env:
        env.setenv(ADMIN_ENV, ADMIN_TOKEN)
        yield from running_gateway("sqlite", tmp_path_factory.mktemp("monitor"))


def test_the_series_count_what_was_sent(kept: Running) -> None:
    started = time.time()
    tenant = kept.project("request")
    replies = [kept.ask(tenant, f"question {i}", max_tokens=3) for i in range(6)]
    with kept.http(tenant.key) as http:
        stream = http.post("/v1/chat/completions", json={
            "model": "adapter-b", "max_tokens": 4, "stream": True,
            "messages": [{"role": "user", "content": "hi"}]})
        assert stream.status_code == 200
        kept.fake.mode = "reject"  # the engine refuses: an upstream error of adapter-a
        try:
            assert http.post("/v1/chat/completions", json={
                "model": "adapter-a", "messages": [{"role": "user", "content": "x"}]}
            ).status_code == 400
        finally:
            kept.fake.mode = "ok"
        for feedback in ({"rating": "up"}, {"rating": "down"}, {"score": 0.5}):
            http.post(f"/v1/chat/completions/{replies[0]['id']}/feedback", json=feedback)
    with httpx.Client(base_url=kept.url) as stranger:
        assert stranger.get("/v1/models", headers={
            "authorization": "Bearer af-wrong"}).status_code == 401
    kept.gateway.audit.drain()

    with kept.http() as admin:
        read = admin.get("/admin/monitor", params={
            "since": repr(started - 1), "window": "3600",
            "model": ["adapter-a", "adapter-b"]}).json()
    [a] = read["models"]["adapter-a"]
    assert (a["requests"], a["answered"], a["errors"]) == (7, 7, {"upstream_error": 1})
    assert a["error_rate"] == round(1 / 7, 4) and a["completion_tokens"] == 18
    assert a["latency_ms"]["p50"] > 0 and a["ttft_ms"] is None  # none of them streamed
    assert (a["feedback"], a["mean_score"]) == (3, 0.5)
    assert a["feedback_rate"] == round(3 / 6, 4)
    [b] = read["models"]["adapter-b"]
    assert b["requests"] == 1 and b["ttft_ms"]["p50"] > 0 and b["tpot_ms"] is not None
    with kept.http() as admin:  # refusals before a model are their own line
        everything = admin.get("/admin/monitor", params={"since": repr(started - 1)}).json()
    assert everything["models"]["-"][0]["refused"] == {"auth": 1}


def test_only_the_admin_reads_it_and_bad_windows_are_400s(kept: Running) -> None:
    tenant = kept.project("request")
    with kept.http(tenant.key) as owner:
        assert owner.get("/admin/monitor").status_code == 403
        assert owner.get("/admin/monitor/prompts?model=adapter-a").status_code == 403
    with kept.http() as admin:
        for params in ({"window": "7"}, {"since": "x"}, {"since": "0", "until": "1e12"},
                       {"model": "a\u0000b"}):
            r = admin.get("/admin/monitor", params=params)
            assert r.status_code == 400 and r.json()["error"]["message"], (params, r.text)
        assert admin.get("/admin/monitor/prompts").status_code == 400


def test_recent_prompts_are_the_kept_chats_last_user_turns(kept: Running) -> None:
    tenant = kept.project("request")
    for text in ("first", "second"):
        kept.ask(tenant, text)
    kept.ask(tenant, "not kept", store=False)
    with kept.http() as admin:
        prompts = admin.get("/admin/monitor/prompts", params={
            "model": "adapter-a", "limit": "2"}).json()["data"]
    assert prompts == ["second", "first"]
