"""RAG through the gateway: retrieval from a collection the key's project may read, the answer
from the served adapter, citations in the response; another project's collection is invisible."""

import json

import openai

from config.schema import FactoryConfig
from pipelines.graph import resources_for
from tests.gateway_fixtures import RunningGateway

Project = tuple[FactoryConfig, object]


def question(project: Project) -> dict[str, str]:
    store = resources_for(project[0])["store"]
    corpus = store.local_dir(store.read_ref("corpus/filings")["prefix"])
    lines = (corpus / "questions.jsonl").read_text().splitlines()
    return next(q for q in map(json.loads, lines) if "chief executive" in q["question"])


def ask(gw: RunningGateway, key: str, q: str, **kwargs: object) -> object:
    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=key, max_retries=0)
    return client.chat.completions.create(
        model="math-lora", max_tokens=16, temperature=0,
        messages=[{"role": "user", "content": q}],
        extra_body={"rag": {"collection": "filings", "top_k": 2}}, **kwargs)


def test_rag_answer_cites_the_source_document(gateway_server: RunningGateway,
                                              small_project: Project) -> None:
    gw, q = gateway_server, question(small_project)
    gw.gateway.tenancy.grant(gw.project, "filings", kind="collection")
    plain = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=gw.key).chat.completions.create(
        model="math-lora", max_tokens=16, temperature=0,
        messages=[{"role": "user", "content": q["question"]}])
    answer = ask(gw, gw.key, q["question"])
    citations = answer.model_extra["citations"]  # type: ignore[attr-defined]
    assert citations[0]["source"] == q["source"]
    assert citations[0]["chunk_id"] and citations[0]["index"] == 1 and citations[0]["text"]
    assert len(citations) == 2
    # the retrieved passages reached the model: the prompt grew by their tokens
    assert answer.usage.prompt_tokens > plain.usage.prompt_tokens + 50  # type: ignore[attr-defined]

    chunks = list(ask(gw, gw.key, q["question"], stream=True))
    assert chunks[0].model_extra["citations"][0]["source"] == q["source"]  # type: ignore[index]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def test_another_projects_collection_is_404(gateway_server: RunningGateway,
                                           small_project: Project) -> None:
    gw, q = gateway_server, question(small_project)
    gw.gateway.tenancy.grant(gw.project, "filings", kind="collection")
    gw.gateway.tenancy.grant(gw.other_project, "math-lora")  # the model, not the collection
    messages = []
    try:
        for collection in ("filings", "no-such-collection"):
            with gw.client(key=gw.other_key) as c:
                r = c.post("/v1/chat/completions", json={
                    "model": "math-lora", "messages": [{"role": "user", "content": q["question"]}],
                    "rag": {"collection": collection}})
            assert r.status_code == 404, r.text
            assert r.json()["error"]["code"] == "collection_not_found"
            messages.append(r.json()["error"]["message"].replace(collection, "?"))
    finally:
        gw.gateway.tenancy.revoke_grant(gw.other_project, "math-lora")
    assert messages[0] == messages[1]  # "not yours" reads exactly like "does not exist"
