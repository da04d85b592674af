"""Stored completions and feedback through the openai SDK, as an application would use them
(issue #43): kept only when the project opted in, listed and filtered, a stream kept whole,
rated and corrected, bounded, scrubbed, shared as a conversation, purged, and never seen by
another project. A real gateway (uvicorn, the audit writer, SQLite and PostgreSQL) in front of
the fake engine; tests/serving/test_stored_completions_vllm.py does the same against vLLM.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import openai
import pytest
from sqlalchemy import func, select

from gateway.db import AuditRecord, Feedback, StoredCompletion
from tests.support.capture import ADMIN_ENV, ADMIN_TOKEN, Running, Tenant, running_gateway

HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def kept(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[Running]:
    with pytest.MonkeyPatch.context() as env:
        env.setenv(ADMIN_ENV, ADMIN_TOKEN)
        yield from running_gateway(request.param, tmp_path_factory.mktemp("capture"))


def rows_of(kept: Running, tenant: Tenant) -> list[StoredCompletion]:
    """What the database holds for the project (the audit writer drained first)."""
    kept.gateway.audit.drain()
    project_id = kept.gateway.tenancy.project_id(tenant.project)
    with kept.gateway.sessions() as s:
        return list(s.scalars(select(StoredCompletion)
                              .where(StoredCompletion.project_id == project_id)))


def ask(client: openai.OpenAI, text: str = "hi", **extra: object) -> str:
    reply = client.chat.completions.create(
        model="adapter-a", max_tokens=4, messages=[{"role": "user", "content": text}], **extra)
    return reply.id


def test_the_sdk_lists_filters_retrieves_relabels_and_deletes(kept: Running) -> None:
    tenant = kept.project("request")
    client = kept.openai(tenant)
    billing = ask(client, "my invoice", store=True, metadata={"topic": "billing"})
    other = ask(client, "the weather", store=True, metadata={"topic": "smalltalk"})
    ask(client, "not kept")  # no store: true

    listed = client.chat.completions.list()
    assert [c.id for c in listed.data] == [billing, other]  # oldest first, the unkept absent
    assert [c.id for c in client.chat.completions.list(metadata={"topic": "billing"}).data] \
        == [billing]
    assert [c.id for c in client.chat.completions.list(order="desc", limit=1).data] == [other]
    assert [c.id for c in client.chat.completions.list(after=billing).data] == [other]
    assert client.chat.completions.list(model="adapter-b").data == []

    found = client.chat.completions.retrieve(billing)
    assert found.choices[0].message.content == "tok tok tok tok "
    assert found.metadata == {"topic": "billing"} and found.usage.completion_tokens == 4
    messages = client.chat.completions.messages.list(billing)
    assert [(m.role, m.content) for m in messages.data] == [("user", "my invoice")]

    client.chat.completions.update(billing, metadata={"topic": "refunds"})
    assert client.chat.completions.list(metadata={"topic": "billing"}).data == []
    assert client.chat.completions.retrieve(billing).metadata == {"topic": "refunds"}

    deleted = client.chat.completions.delete(billing)
    assert deleted.deleted is True and deleted.id == billing
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.retrieve(billing)
    assert [r.completion_id for r in rows_of(kept, tenant)] == [other]


def test_nothing_is_kept_for_a_project_that_did_not_opt_in(kept: Running) -> None:
    closed = kept.project("off")
    ask(kept.openai(closed), store=True, metadata={"topic": "x"})
    assert rows_of(kept, closed) == []
    assert kept.openai(closed).chat.completions.list().data == []
    on_request = kept.project("request")
    ask(kept.openai(on_request))  # store left out
    assert rows_of(kept, on_request) == []


def test_policy_all_keeps_every_chat_and_a_stream_whole(kept: Running) -> None:
    tenant = kept.project("all")
    client = kept.openai(tenant)
    stream = client.chat.completions.create(model="adapter-a", max_tokens=5, messages=HI,
                                            stream=True)
    pieces = [c.choices[0].delta.content for c in stream if c.choices]
    assert "".join(p or "" for p in pieces) == "tok " * 5
    [row] = rows_of(kept, tenant)
    found = client.chat.completions.retrieve(row.completion_id)
    assert found.choices[0].message.content == "tok " * 5
    assert found.choices[0].finish_reason == "length"
    assert row.streamed and row.ttft_ms is not None and row.completion_tokens == 5
    assert row.replica == "http://replica-1:8000" and row.user == "owner"


def test_each_kind_of_feedback_is_kept_and_bad_feedback_is_a_400(kept: Running) -> None:
    tenant = kept.project("request")
    client, http = kept.openai(tenant), kept.http(tenant.key)
    compared = http.post("/v1/chat/completions", json={
        "model": "adapter-a", "compare_with": "adapter-b", "max_tokens": 3, "messages": HI,
        "store": True}).json()
    mine, theirs = compared["id"], compared["comparison"][0]["id"]
    unrelated = ask(client, "something else", store=True)

    given = [{"rating": "down"}, {"score": 0.25, "comment": "too terse"},
             {"correction": "Hello! How can I help?"}, {"better_than": mine}]
    for body in given[:3]:
        r = http.post(f"/v1/chat/completions/{mine}/feedback", json=body)
        assert r.status_code == 200, r.text
    assert http.post(f"/v1/chat/completions/{theirs}/feedback", json=given[3]).json()[
        "better_than"] == mine
    kept_feedback = http.get(f"/v1/chat/completions/{mine}/feedback").json()["data"]
    assert [(f["rating"], f["score"], f["comment"], f["correction"]) for f in kept_feedback] == [
        ("down", None, None, None), (None, 0.25, "too terse", None),
        (None, None, None, "Hello! How can I help?")]

    for body, code in [({"score": 1.5}, "invalid_request"), ({}, "invalid_request"),
                       ({"correction": "x" * 32_001}, "invalid_request"),
                       ({"rating": "meh"}, "invalid_request"),
                       ({"better_than": unrelated}, "not_same_prompt")]:
        r = http.post(f"/v1/chat/completions/{mine}/feedback", json=body)
        assert r.status_code == 400 and r.json()["error"]["code"] == code, (body, r.text)
    r = http.post(f"/v1/chat/completions/{mine}/feedback", json={"better_than": "chatcmpl-no"})
    assert r.status_code == 404 and r.json()["error"]["param"] == "better_than"
    # deleting a completion deletes the feedback on it and the preferences that name it
    client.chat.completions.delete(mine)
    with kept.gateway.sessions() as s:
        project_id = kept.gateway.tenancy.project_id(tenant.project)
        assert s.scalar(select(func.count(Feedback.id)).where(
            Feedback.project_id == project_id)) == 0


def test_another_project_sees_none_of_it_and_roles_hold(kept: Running) -> None:
    tenant, stranger = kept.project("request"), kept.project("request")
    chat = ask(kept.openai(tenant), store=True, metadata={"topic": "private"})
    with kept.http(stranger.key) as them:
        missing = them.get("/v1/chat/completions/chatcmpl-does-not-exist")
        for r in (them.get(f"/v1/chat/completions/{chat}"),
                  them.get(f"/v1/chat/completions/{chat}/messages"),
                  them.post(f"/v1/chat/completions/{chat}/feedback", json={"rating": "up"}),
                  them.post(f"/v1/chat/completions/{chat}", json={"metadata": {}}),
                  them.delete(f"/v1/chat/completions/{chat}")):
            assert r.status_code == 404 and r.json()["error"] == {
                **missing.json()["error"], "message": r.json()["error"]["message"]}
        assert them.get("/v1/chat/completions?metadata[topic]=private").json()["data"] == []
    viewer = kept.member(tenant, "vera", "viewer")
    member = kept.member(tenant, "max", "member")
    with kept.http(viewer.key) as v, kept.http(member.key) as m:
        assert v.get(f"/v1/chat/completions/{chat}").status_code == 200
        assert v.post(f"/v1/chat/completions/{chat}/feedback",
                      json={"rating": "up"}).status_code == 403
        assert m.post(f"/v1/chat/completions/{chat}/feedback",
                      json={"rating": "up"}).status_code == 200
        assert m.delete(f"/v1/chat/completions/{chat}").status_code == 403
        assert m.put(f"/admin/projects/{tenant.project}/capture",
                     json={"policy": "all"}).status_code == 403
    kept.gateway.audit.drain()
    with kept.gateway.sessions() as s:  # every call left its audit row, refused ones too
        routes = set(s.scalars(select(AuditRecord.route).where(AuditRecord.status == 404)))
    assert {"chat.completions.retrieve", "chat.completions.feedback",
            "chat.completions.delete"} <= routes


def test_metadata_and_paging_bounds_are_400s(kept: Running) -> None:
    tenant = kept.project("request")
    with kept.http(tenant.key) as http:
        for metadata in ({f"k{i}": "v" for i in range(17)}, {"k" * 65: "v"},
                         {"k": "v" * 513}, {"k": "line\nbreak"}):
            r = http.post("/v1/chat/completions", json={
                "model": "adapter-a", "messages": HI, "store": True, "metadata": metadata})
            assert r.status_code == 400 and r.json()["error"]["param"] == "metadata", r.text
        for query in ("limit=0", "limit=101", "limit=x", "order=sideways",
                      "after=chatcmpl-nowhere"):
            r = http.get(f"/v1/chat/completions?{query}")
            assert 400 <= r.status_code < 500 and r.json()["error"]["message"], (query, r.text)
    assert rows_of(kept, tenant) == []


def test_a_full_bound_evicts_the_oldest_and_never_fails_the_chat(kept: Running) -> None:
    tenant = kept.project("all", capture_rows=3)
    client = kept.openai(tenant)
    ids = [ask(client, f"question {i}") for i in range(5)]  # each a 200
    assert [c.id for c in client.chat.completions.list().data] == ids[2:]
    with kept.http(tenant.key) as owner:
        capture = owner.get(f"/admin/projects/{tenant.project}/capture").json()
    assert capture["kept"]["rows"] == 3 and capture["evicted"] == 2
    assert capture["bounds"]["rows"] == 3


def test_pii_is_scrubbed_before_it_is_written_when_the_project_asks(kept: Running) -> None:
    tenant = kept.project("all", scrub_pii=True)
    ask(kept.openai(tenant), "write to jane.doe@example.com or call 415-555-0132")
    [row] = rows_of(kept, tenant)
    assert "jane.doe" not in row.messages and "555-0132" not in row.messages
    assert "[EMAIL]" in row.messages and "[PHONE]" in row.messages


def test_a_conversation_is_listed_for_its_author_and_shared_with_the_project(
        kept: Running) -> None:
    tenant = kept.project("request")
    colleague = kept.member(tenant, "carol", "member")
    client = kept.openai(tenant)
    for text in ("first question", "second question"):
        ask(client, text, store=True, metadata={"session": "s-1"})
    with kept.http(tenant.key) as owner, kept.http(colleague.key) as other:
        [session] = owner.get("/v1/chat/sessions").json()["data"]
        assert (session["id"], session["turns"], session["title"], session["shared"]) == (
            "s-1", 2, "first question", False)
        assert other.get("/v1/chat/sessions").json()["data"] == []
        assert other.post("/v1/chat/sessions/s-1/share").status_code == 404  # not theirs
        assert owner.post("/v1/chat/sessions/s-1/share").json()["shared"] is True
        assert [s["id"] for s in other.get("/v1/chat/sessions").json()["data"]] == ["s-1"]
        turns = other.get("/v1/chat/completions?metadata[session]=s-1").json()["data"]
    assert [t["messages"][0]["content"] for t in turns] == ["first question", "second question"]


def test_the_admin_purges_what_names_a_phrase_with_its_feedback(kept: Running) -> None:
    tenant = kept.project("request")
    client = kept.openai(tenant)
    word = f"zebra-umbrella-{uuid.uuid4().hex[:8]}"  # a purge is every project's
    doomed = ask(client, f"the code word is {word}", store=True)
    spared = ask(client, "nothing to see", store=True)
    with kept.http(tenant.key) as http:
        http.post(f"/v1/chat/completions/{doomed}/feedback", json={"rating": "up"})
    with kept.http() as admin:
        dry = admin.post("/admin/completions/purge",
                         json={"contains": [word], "dry_run": True}).json()
        assert dry["completions"] == 1 and [r.completion_id for r in rows_of(kept, tenant)] \
            == [doomed, spared]
        done = admin.post("/admin/completions/purge", json={"contains": [word]})
        assert done.json()["data"] == [{"project": tenant.project, "completion_id": doomed}]
        assert done.json()["feedback"] == 1
        with kept.http(tenant.key) as owner:  # a tenant may not purge
            assert owner.post("/admin/completions/purge",
                              json={"contains": ["nothing"]}).status_code == 403
    assert [r.completion_id for r in rows_of(kept, tenant)] == [spared]


def test_ids_names_and_text_no_database_takes_are_4xx(kept: Running) -> None:
    """A NUL (PostgreSQL refuses it in any string) or a control character in an id, a filter,
    a session or feedback text never reaches a query as such: the API's 4xx, or kept as text."""
    tenant = kept.project("request")
    chat = ask(kept.openai(tenant), store=True)
    with kept.http(tenant.key) as http:
        for method, path in (("GET", "/v1/chat/completions/chatcmpl-%00"),
                             ("GET", "/v1/chat/completions/%01/messages"),
                             ("DELETE", "/v1/chat/completions/x%00y"),
                             ("GET", "/v1/chat/completions?after=%00"),
                             ("POST", "/v1/chat/sessions/s%00/share"),
                             ("GET", f"/v1/chat/completions/{'x' * 97}")):
            r = http.request(method, path)
            assert 400 <= r.status_code < 500 and r.json()["error"]["code"], (path, r.text)
        assert http.get("/v1/chat/completions?model=%00").json()["data"] == []
        r = http.post(f"/v1/chat/completions/{chat}/feedback",
                      json={"comment": "nul \u0000 here", "better_than": None})
        assert r.status_code == 200 and r.json()["comment"] == "nul \ufffd here"
        r = http.post(f"/v1/chat/completions/{chat}/feedback", json={"better_than": "a\u0000"})
        assert r.status_code == 404 and r.json()["error"]["param"] == "better_than"
    with kept.http() as admin:
        r = admin.post("/admin/completions/purge", json={"contains": ["a\u0000b"]})
        assert r.status_code == 400
        r = admin.get(f"/admin/projects/{tenant.project}/feedback/count?model=%00")
        assert r.status_code == 400 and r.json()["error"]["param"] == "model"


def test_a_purge_matches_what_people_wrote_never_the_stored_form(kept: Running) -> None:
    """A phrase that is a word of the stored JSON (`content`, `assistant`) purges nothing; a
    phrase with accents, or one only a correction holds, is found. (A purge is every
    project's, and PostgreSQL outlives a run: the phrases are this run's own.)"""
    tenant = kept.project("request")
    client = kept.openai(tenant)
    run = uuid.uuid4().hex[:8]
    accented = ask(client, f"Réunion à Genève, salle Émeraude {run}", store=True)
    corrected = ask(client, "what is the code?", store=True)
    with kept.http(tenant.key) as http:
        http.post(f"/v1/chat/completions/{corrected}/feedback",
                  json={"correction": f"It is kiwi-lantern-{run}."})
    with kept.http() as admin:
        for phrase in ("content", "assistant", "role", "finish_reason"):
            assert admin.post("/admin/completions/purge", json={
                "contains": [phrase], "dry_run": True}).json()["completions"] == 0, phrase
        found = admin.post("/admin/completions/purge", json={
            "contains": [f"Genève, salle Émeraude {run}", f"kiwi-lantern-{run}"]}).json()
    assert {d["completion_id"] for d in found["data"]} == {accented, corrected}


def test_a_completion_keeps_at_most_fifty_pieces_of_feedback(kept: Running) -> None:
    tenant = kept.project("request")
    chat = ask(kept.openai(tenant), store=True)
    with kept.http(tenant.key) as http:
        for i in range(50):
            assert http.post(f"/v1/chat/completions/{chat}/feedback",
                             json={"score": i / 50}).status_code == 200
        r = http.post(f"/v1/chat/completions/{chat}/feedback", json={"rating": "up"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "too_much_feedback"
