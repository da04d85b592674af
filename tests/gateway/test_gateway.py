"""The gateway with real clients (openai SDK, LlamaIndex) in front of the real vLLM server,
and a hostile client that must get clean OpenAI-format errors, each one audited."""

import itertools
import json
import time
from pathlib import Path

import httpx
import openai
import pytest
from sqlalchemy import select

from gateway.db import AuditRecord
from tests.support.gateway_fixtures import ADMIN_TOKEN, RunningGateway

QUESTION = "Ava has 3 pens. Ava gets 4 more pens. How many pens does Ava have now?"


def sdk(gw: RunningGateway, key: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key=key or gw.key, max_retries=0)


def audit_rows(gw: RunningGateway, **where: object) -> list[AuditRecord]:
    gw.gateway.audit.drain()  # records are written in batches; flush what is queued
    with gw.gateway.sessions() as s:
        q = select(AuditRecord).order_by(AuditRecord.id)
        for column, value in where.items():
            q = q.where(getattr(AuditRecord, column) == value)
        return list(s.scalars(q))


# -- the openai SDK ---------------------------------------------------------------------------
def test_models_lists_exactly_what_the_project_may_use(gateway_server: RunningGateway) -> None:
    ours = {m.id for m in sdk(gateway_server).models.list()}
    assert ours == {"tiny", "math-lora", "all-MiniLM-L6-v2"}
    theirs = {m.id for m in sdk(gateway_server, gateway_server.other_key).models.list()}
    assert theirs == set()


def test_chat_completion_through_the_sdk(gateway_server: RunningGateway) -> None:
    answer = sdk(gateway_server).chat.completions.create(
        model="math-lora", messages=[{"role": "user", "content": QUESTION}], max_tokens=16,
        temperature=0, seed=1, stop=["<|end|>"])
    assert answer.model == "math-lora"
    assert answer.choices[0].message.content
    assert answer.usage and answer.usage.prompt_tokens > 0
    row = audit_rows(gateway_server, route="chat.completions", status=200)[-1]
    assert row.model == "math-lora" and row.completion_tokens == answer.usage.completion_tokens
    assert row.prompt_text is None  # prompts are not kept unless the project opts in
    assert row.replica and row.latency_ms > 0


def test_streaming_relays_chunks_and_usage(gateway_server: RunningGateway) -> None:
    stream = sdk(gateway_server).chat.completions.create(
        model="math-lora", messages=[{"role": "user", "content": QUESTION}], max_tokens=12,
        temperature=0, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    # the stream's audit row is written when the server finishes the stream, just after the
    # client has read [DONE]
    deadline = time.monotonic() + 10
    while True:
        streamed = [r for r in audit_rows(gateway_server, route="chat.completions")
                    if r.ttft_ms is not None]
        if streamed or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert streamed and streamed[-1].completion_tokens == chunks[-1].usage.completion_tokens


def test_kept_chats_through_the_sdk_against_vllm(gateway_server: RunningGateway) -> None:
    """Stored completions against the real engine: a chat and a stream kept with their
    metadata, listed, filtered, retrieved (the stream whole), their messages read, deleted;
    the other project sees none of it."""
    gw = gateway_server
    gw.gateway.tenancy.set_capture(gw.project, "request", False)
    client = sdk(gw)
    try:
        asked = client.chat.completions.create(
            model="math-lora", messages=[{"role": "user", "content": QUESTION}], max_tokens=16,
            temperature=0, store=True, metadata={"case": "sdk-vllm", "turn": "1"})
        stream = client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": QUESTION}], max_tokens=12,
            temperature=0, stream=True, store=True, metadata={"case": "sdk-vllm", "turn": "2"})
        streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        deadline = time.monotonic() + 10
        while len(kept := client.chat.completions.list(metadata={"case": "sdk-vllm"}).data) < 2:
            assert time.monotonic() < deadline, kept  # a stream is kept just after its end
            time.sleep(0.1)
        assert [c.metadata["turn"] for c in kept] == ["1", "2"]
        assert kept[0].id == asked.id and kept[0].model == "math-lora"
        assert kept[0].choices[0].message.content == asked.choices[0].message.content
        assert kept[1].choices[0].message.content == streamed and streamed
        assert [c.id for c in client.chat.completions.list(
            metadata={"case": "sdk-vllm"}, model="tiny").data] == [kept[1].id]
        messages = client.chat.completions.messages.list(asked.id).data
        assert [(m.role, m.content) for m in messages] == [("user", QUESTION)]
        assert sdk(gw, gw.other_key).chat.completions.list().data == []
        with pytest.raises(openai.NotFoundError):
            sdk(gw, gw.other_key).chat.completions.retrieve(asked.id)
        for chat in kept:
            assert client.chat.completions.delete(chat.id).deleted
        assert client.chat.completions.list(metadata={"case": "sdk-vllm"}).data == []
    finally:
        gw.gateway.tenancy.set_capture(gw.project, "off", False)


def test_vllm_sampling_extras_reach_the_engine(gateway_server: RunningGateway) -> None:
    """What the SDK sends as `extra_body` (vLLM's own options) is validated and forwarded, not
    dropped: a repetition penalty changes what greedy decoding writes."""
    def greedy(**extra: object) -> str:
        answer = sdk(gateway_server).chat.completions.create(
            model="math-lora", messages=[{"role": "user", "content": QUESTION}], max_tokens=40,
            temperature=0, extra_body={"min_tokens": 40, "ignore_eos": True, **extra})
        assert answer.usage and answer.usage.completion_tokens == 40
        return answer.choices[0].message.content or ""

    assert greedy() == greedy()
    assert greedy(repetition_penalty=2.0) != greedy()


def test_completions_and_logprobs(gateway_server: RunningGateway) -> None:
    out = sdk(gateway_server).completions.create(model="tiny", prompt="7 + 5 =", max_tokens=4,
                                                 temperature=0, logprobs=2)
    assert out.choices[0].text
    assert out.choices[0].logprobs and out.choices[0].logprobs.top_logprobs


def test_embeddings_from_the_local_model(gateway_server: RunningGateway) -> None:
    out = sdk(gateway_server).embeddings.create(model="all-MiniLM-L6-v2",
                                                input=["revenue grew", "sales rose"])
    assert len(out.data) == 2 and len(out.data[0].embedding) == 384
    norm = sum(x * x for x in out.data[0].embedding) ** 0.5
    assert norm == pytest.approx(1.0, abs=1e-3)
    assert out.usage.prompt_tokens > 0


def test_a_granted_mixture_is_one_model_name(gateway_server: RunningGateway) -> None:
    with gateway_server.client(key=gateway_server.other_key) as c:
        assert c.post("/v1/chat/completions", json=chat_body("math-mix")).status_code == 404
    gateway_server.gateway.tenancy.grant(gateway_server.other_project, "math-mix")
    with gateway_server.client(key=gateway_server.other_key) as c:
        r = c.post("/v1/chat/completions", json=chat_body("math-mix"))
        listed = {m["id"] for m in c.get("/v1/models").json()["data"]}
    assert r.status_code == 200 and r.json()["model"] == "math-mix"
    assert listed == {"math-mix"}
    gateway_server.gateway.tenancy.revoke_grant(gateway_server.other_project, "math-mix")


def test_comparison_mode_answers_side_by_side(gateway_server: RunningGateway) -> None:
    with gateway_server.client() as c:
        r = c.post("/v1/chat/completions", json={
            "model": "math-lora", "compare_with": "tiny", "max_tokens": 8, "temperature": 0,
            "messages": [{"role": "user", "content": QUESTION}]})
    assert r.status_code == 200
    body = r.json()
    assert body["model"] == "math-lora" and body["comparison"][0]["model"] == "tiny"


def test_llamaindex_openai_like_client(gateway_server: RunningGateway) -> None:
    from llama_index.core.llms import ChatMessage
    from llama_index.llms.openai_like import OpenAILike

    llm = OpenAILike(model="math-lora", api_base=f"{gateway_server.url}/v1",
                     api_key=gateway_server.key, is_chat_model=True, max_tokens=8,
                     temperature=0)
    reply = llm.chat([ChatMessage(role="user", content=QUESTION)])
    assert reply.message.content


# -- the hostile client ------------------------------------------------------------------------
def chat_body(model: str = "math-lora", **extra: object) -> dict:
    return {"model": model, "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}],
            **extra}


def assert_error(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == code and error["message"] and error["type"]


def test_no_key_wrong_key_and_revoked_key_are_401(gateway_server: RunningGateway) -> None:
    before = len(audit_rows(gateway_server, status=401))
    with gateway_server.client(key="") as c:
        assert_error(c.post("/v1/chat/completions", json=chat_body()), 401, "missing_api_key")
    with gateway_server.client(key="af-not-a-real-key") as c:
        assert_error(c.get("/v1/models"), 401, "invalid_api_key")
    t = gateway_server.gateway.tenancy
    doomed = t.create_key(gateway_server.project, "alice", name="doomed")
    with gateway_server.client(key=doomed["key"]) as c:
        assert c.get("/v1/models").status_code == 200
        t.revoke_key(doomed["id"])
        assert_error(c.get("/v1/models"), 401, "invalid_api_key")
    assert len(audit_rows(gateway_server, status=401)) == before + 3


def test_another_projects_adapter_is_404_not_403(gateway_server: RunningGateway) -> None:
    with gateway_server.client(key=gateway_server.other_key) as c:
        r = c.post("/v1/chat/completions", json=chat_body("math-lora"))
        assert_error(r, 404, "model_not_found")
        unknown = c.post("/v1/chat/completions", json=chat_body("no-such-adapter"))
    assert r.json()["error"]["message"].replace("math-lora", "X") == \
        unknown.json()["error"]["message"].replace("no-such-adapter", "X")  # no existence leak
    row = audit_rows(gateway_server, status=404)[-2]
    assert row.model == "math-lora" and row.error == "model_not_found"


@pytest.mark.parametrize("name", ["../../etc/passwd", "math-lora/../tiny", "a b", "x" * 300,
                                  "%2e%2e%2f", "tiny\u0000", "", "math-lora;rm -rf"])
def test_odd_model_names_are_rejected_cleanly(gateway_server: RunningGateway, name: str) -> None:
    with gateway_server.client() as c:
        r = c.post("/v1/chat/completions", json=chat_body(name))
    assert r.status_code in (400, 404), r.text
    assert r.json()["error"]["code"] in ("model_not_found", "invalid_request")


def test_oversized_and_malformed_bodies(gateway_server: RunningGateway) -> None:
    limits = gateway_server.gateway.settings.limits
    with gateway_server.client() as c:
        big = json.dumps(chat_body(pad="x" * (limits.max_body_bytes + 10)))
        assert_error(c.post("/v1/chat/completions", content=big,
                            headers={"content-type": "application/json"}), 413,
                     "request_too_large")
        assert_error(c.post("/v1/chat/completions", content=b"{'model': nope",
                            headers={"content-type": "application/json"}), 400, "invalid_json")
        assert_error(c.post("/v1/chat/completions", json=chat_body(max_tokens=10**6)), 400,
                     "max_tokens_too_large")
        assert_error(c.post("/v1/chat/completions",
                            json=chat_body(max_tokens=None, min_tokens=10**6)), 400,
                     "min_tokens_too_large")
        r = c.post("/v1/chat/completions", json=chat_body(min_tokens=5))  # max_tokens is 4
        assert_error(r, 400, "invalid_request")
        assert "min_tokens" in r.json()["error"]["message"]
        long_prompt = {"role": "user", "content": "y" * (limits.max_prompt_chars + 1)}
        assert_error(c.post("/v1/chat/completions", json={**chat_body(),
                                                          "messages": [long_prompt]}),
                     400, "prompt_too_long")
        r = c.post("/v1/chat/completions", json=chat_body(temperature=7))
        assert_error(r, 400, "invalid_request")
        assert r.json()["error"]["param"] == "temperature"
        assert_error(c.post("/v1/chat/completions", json={"model": "math-lora",
                                                          "messages": []}),
                     400, "invalid_request")
    codes = {row.error for row in audit_rows(gateway_server, status=400)}
    assert {"invalid_json", "max_tokens_too_large", "prompt_too_long"} <= codes
    assert audit_rows(gateway_server, status=413)


def test_rate_limit_is_429_with_retry_after(gateway_server: RunningGateway) -> None:
    t = gateway_server.gateway.tenancy
    limited = t.create_key(gateway_server.project, "alice", name="limited", rpm=2)
    with gateway_server.client(key=limited["key"]) as c:
        assert c.get("/v1/models").status_code == 200
        assert c.get("/v1/models").status_code == 200
        r = c.get("/v1/models")
    assert_error(r, 429, "rate_limit_exceeded")
    assert 1 <= int(r.headers["retry-after"]) <= 60
    assert audit_rows(gateway_server, status=429, key_id=limited["id"])


def test_a_client_that_hangs_up_is_billed_for_what_it_read(
        gateway_server: RunningGateway) -> None:
    """Against the real engine: the stream is cut after a few chunks, the audit row and the
    token limit still carry the tokens that were relayed (before: 0, from the usage chunk
    that never came)."""
    key = gateway_server.gateway.tenancy.create_key(gateway_server.project, "alice",
                                                    name="hangs-up")
    with gateway_server.client(key=key["key"]) as c, c.stream(
            "POST", "/v1/chat/completions", json={
                "model": "math-lora", "max_tokens": 200, "temperature": 0, "stream": True,
                "min_tokens": 200, "ignore_eos": True,
                "messages": [{"role": "user", "content": QUESTION}]}) as r:
        assert r.status_code == 200
        read = [line for line in itertools.islice(r.iter_lines(), 8) if line.startswith("data")]
    deadline = time.monotonic() + 10
    while not (rows := audit_rows(gateway_server, key_id=key["id"])):
        assert time.monotonic() < deadline, "no audit row for the abandoned stream"
        time.sleep(0.1)
    # the first event carries only the role; how far the engine got before the gateway closed
    # the stream depends on timing, so the exact cut is tested on the fake engine
    assert rows[0].prompt_tokens > 0 and len(read) - 1 <= rows[0].completion_tokens <= 200


def test_viewer_may_list_but_not_infer(gateway_server: RunningGateway) -> None:
    t = gateway_server.gateway.tenancy
    t.add_member(gateway_server.project, "victor", "viewer")
    viewer = t.create_key(gateway_server.project, "victor")["key"]
    with gateway_server.client(key=viewer) as c:
        assert c.get("/v1/models").status_code == 200
        assert_error(c.post("/v1/chat/completions", json=chat_body()), 403,
                     "insufficient_role")


def test_key_rotation_and_admin_api(gateway_server: RunningGateway) -> None:
    with httpx.Client(base_url=gateway_server.url,
                      headers={"authorization": f"Bearer {ADMIN_TOKEN}"}) as admin:
        created = admin.post(f"/admin/projects/{gateway_server.project}/keys",
                             json={"user": "alice", "name": "ci"}).json()
        rotated = admin.post(f"/admin/keys/{created['id']}/rotate").json()
        listed = admin.get(f"/admin/projects/{gateway_server.project}/keys").json()
        assert admin.post("/admin/projects/nope/keys", json={"user": "x"}).status_code == 404
    assert rotated["key"] != created["key"] and rotated["prefix"] == rotated["key"][:10]
    assert {k["id"]: k["revoked"] for k in listed}[created["id"]] is True
    assert all("key" not in k for k in listed)  # secrets are never shown again
    with gateway_server.client(key=created["key"]) as old:
        assert old.get("/v1/models").status_code == 401
    with gateway_server.client(key=rotated["key"]) as new:
        assert new.get("/v1/models").status_code == 200
    with gateway_server.client(key=gateway_server.other_key) as outsider:
        r = outsider.post(f"/admin/projects/{gateway_server.project}/keys", json={"user": "x"})
        assert r.status_code == 403


def test_usage_and_metrics(gateway_server: RunningGateway) -> None:
    usage = gateway_server.gateway.tenancy.usage(gateway_server.project)
    assert sum(u["requests"] for u in usage) >= 5
    assert sum(u["completion_tokens"] for u in usage) > 0
    with httpx.Client(base_url=gateway_server.url) as c:
        assert c.get("/metrics").status_code == 401  # not for everyone
        text = c.get("/metrics", headers={"authorization": f"Bearer {ADMIN_TOKEN}"}).text
    assert 'gateway_requests_total{model="math-lora",route="chat.completions",status="200"}' \
        in text
    assert "gateway_time_to_first_token_seconds_count" in text
    assert 'gateway_errors_total{code="model_not_found"' in text


def test_failover_to_a_live_replica_and_adapter_aware_choice(
        vllm_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from config.gateway import GatewaySettings
    from gateway.upstream import Replica, ReplicaPool
    from tests.support.gateway_fixtures import serve, tenants

    monkeypatch.setenv("FACTORY_GATEWAY_ADMIN_TOKEN", ADMIN_TOKEN)
    dead = "http://127.0.0.1:9"  # nothing listens here
    settings = GatewaySettings(database_url=f"sqlite:///{tmp_path / 'gw.db'}",
                               upstreams=[dead, vllm_url])
    for url, gateway in serve(settings):
        _, key, _, _ = tenants(gateway, ["math-lora"])
        headers = {"authorization": f"Bearer {key}"}
        r = httpx.post(f"{url}/v1/chat/completions", headers=headers, timeout=60, json={
            "model": "math-lora", "max_tokens": 4,
            "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 200
        health = httpx.get(f"{url}/health",
                           headers={"authorization": f"Bearer {ADMIN_TOKEN}"}).json()
        assert {h["url"]: h["healthy"] for h in health["replicas"]} == {dead: False,
                                                                       vllm_url: True}
    pool = ReplicaPool([])
    pool.replicas = [Replica("a", {"base", "x"}, healthy=True, in_flight=3),
                     Replica("b", {"base", "x", "y"}, healthy=True, in_flight=1),
                     Replica("c", {"base", "y"}, healthy=False)]
    assert [r.url for r in pool.candidates("x")] == ["b", "a"]  # least busy first
    assert [r.url for r in pool.candidates("y")] == ["b"]  # only replicas that have it loaded
    assert pool.candidates("z") == []


def test_a_hot_adapters_merged_replica_takes_its_requests_and_lora_replicas_back_it_up(
        ) -> None:
    """A deployment serving `hot` merged (assets/hot_adapters.py) publishes a replica whose own
    model is `hot`: the gateway sends `hot` there even while it is the busier one, other models
    to the LoRA replica, and `hot` to the LoRA replica once the merged one is gone."""
    import asyncio

    from gateway.upstream import ReplicaPool
    from tests.support.fake_vllm import FakeVLLM

    engines = {"lora": FakeVLLM(models=("base", "hot", "cold")),
               "merged": FakeVLLM(models=("hot",), base="hot")}

    async def engine(request: httpx.Request) -> httpx.Response:
        if request.url.host == "merged" and engines["merged"].mode == "gone":
            raise httpx.ConnectError("connection refused", request=request)
        return await engines[request.url.host].handle(request)

    async def scenario() -> None:
        pool = ReplicaPool(["http://lora", "http://merged"],
                           transport=httpx.MockTransport(engine))
        await pool.refresh(force=True)
        pool.replicas[1].in_flight = 5  # busier than the LoRA replica: still preferred
        for model in ("hot", "hot", "cold"):
            response, _ = await pool.post(model, "/v1/completions",
                                          {"model": model, "prompt": "hi", "max_tokens": 2})
            assert response.status_code == 200
        assert [b["model"] for b in engines["merged"].sent("/v1/completions")] == ["hot", "hot"]
        assert [b["model"] for b in engines["lora"].sent("/v1/completions")] == ["cold"]
        engines["merged"].mode = "gone"
        response, used = await pool.post("hot", "/v1/completions",
                                          {"model": "hot", "prompt": "hi", "max_tokens": 2})
        assert (response.status_code, used) == (200, "http://lora")
        await pool.close()

    asyncio.run(scenario())


def test_a_busy_replica_keeps_its_models_and_nobody_waits_for_its_probe() -> None:
    """A saturated engine answers /v1/models slowly: its adapters must not turn into 404s,
    and requests must not queue behind the probe. A refused connection does drop it."""
    import asyncio

    from gateway.upstream import ReplicaPool

    listing = {"data": [{"id": "base"}, {"id": "x", "parent": "base"}]}
    behaviour = {"mode": "ok"}
    release = asyncio.Event()

    async def replica(request: httpx.Request) -> httpx.Response:
        if behaviour["mode"] == "slow":
            await release.wait()
            raise httpx.ReadTimeout("probe timed out", request=request)
        if behaviour["mode"] == "gone":
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(200, json=listing)

    async def scenario() -> None:
        pool = ReplicaPool(["http://replica"], refresh_seconds=0.01)
        await pool.client.aclose()
        pool.client = httpx.AsyncClient(transport=httpx.MockTransport(replica))
        assert set(await pool.served()) == {"base", "x"}
        behaviour["mode"] = "slow"
        await asyncio.sleep(0.02)
        # the listing is stale: a probe starts in the background, the answer does not wait
        served = await asyncio.wait_for(pool.served(), timeout=5)
        assert "x" in served and pool.candidates("x")
        release.set()
        await pool.refresh(force=True)  # this probe times out too
        assert "x" in await pool.served() and pool.candidates("x")
        behaviour["mode"] = "gone"
        await pool.refresh(force=True)
        assert await pool.served() == {} and not pool.candidates("x")
        await pool.close()

    asyncio.run(scenario())


def test_the_gateway_routes_to_the_replicas_the_deployments_published(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No replica list in the gateway's settings: it follows what deployment materializations
    publish in the object store, without a restart. A replica added is routed to, an adapter a
    replica declares but has not loaded yet (its resolver pulls it on the first request) is
    routed there, and a replica the next materialization removed gets no more requests."""
    from assets.deployments import publish, unpublish
    from config.gateway import GatewaySettings
    from gateway.app import build_gateway
    from gateway.upstream import PublishedReplicas, ReplicaPool
    from resources.object_store import ObjectStore
    from store.reader import ArtifactReader
    from tests.support.fake_vllm import FakeVLLM
    from tests.support.gateway_fixtures import serve, tenants

    monkeypatch.setenv("FACTORY_GATEWAY_ADMIN_TOKEN", ADMIN_TOKEN)
    store = ObjectStore(url=f"file://{tmp_path / 'store'}", root=str(tmp_path))
    one, two = "http://replica-1:8000", "http://replica-2:8000"
    engines = {"replica-1": FakeVLLM(models=("base", "adapter-a")),
               "replica-2": FakeVLLM(models=("base",))}  # adapter-b: not loaded yet

    async def engine(request: httpx.Request) -> httpx.Response:
        return await engines[request.url.host].handle(request)

    settings = GatewaySettings(database_url=f"sqlite:///{tmp_path / 'gw.db'}",
                               object_store=store.url, refresh_seconds=0.05,
                               audit_dead_letter=str(tmp_path / "dead-letter.jsonl"))
    pool = ReplicaPool([], settings.refresh_seconds, transport=httpx.MockTransport(engine),
                       directory=PublishedReplicas(ArtifactReader(store.url)))
    publish(store, "chat", ("base", "v1"), [], [{"url": one, "models": ["base", "adapter-a"]}])
    for url, gateway in serve(settings, build_gateway(settings, pool)):
        _, key, _, _ = tenants(gateway, ["base", "adapter-a", "adapter-b"])

        def ask(model: str, url: str = url, key: str = key) -> int:
            return httpx.post(f"{url}/v1/completions", timeout=10, headers={
                "authorization": f"Bearer {key}"}, json={
                "model": model, "prompt": "hi", "max_tokens": 2}).status_code

        def routed(expected: set[str], url: str = url) -> set[str]:
            """The replicas routed to once a request past refresh_seconds had the store
            re-read (in the background), waiting up to 10 s for `expected`."""
            deadline = time.monotonic() + 10
            while True:
                time.sleep(0.1)
                ask("base")
                health = httpx.get(f"{url}/health", headers={
                    "authorization": f"Bearer {ADMIN_TOKEN}"}).json()
                seen = {h["url"] for h in health["replicas"]}
                if seen == expected or time.monotonic() > deadline:
                    return seen

        assert ask("adapter-a") == 200 and ask("adapter-b") == 404
        publish(store, "chat", ("base", "v1"), [],
                [{"url": one, "models": ["base", "adapter-a"]},
                 {"url": two, "models": ["base", "adapter-b"]}])
        assert routed({one, two}) == {one, two}
        assert ask("adapter-b") == 200
        assert engines["replica-2"].sent("/v1/completions")[-1]["model"] == "adapter-b"
        publish(store, "chat", ("base", "v1"), [], [{"url": two, "models": ["base", "adapter-b"]}])
        assert routed({two}) == {two}
        before = len(engines["replica-1"].requests)
        assert ask("adapter-a") == 404 and ask("base") == 200
        assert len(engines["replica-1"].requests) == before  # nothing reaches a removed replica
        unpublish(store, "chat")
        assert routed(set()) == set()
        assert ask("base") == 404
