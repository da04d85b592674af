"""RAG through the gateway: retrieval from a collection the key's project may read, the answer
from the served adapter, citations in the response; another project's collection is invisible."""


import httpx
import openai

from tests.support.gateway_fixtures import RunningGateway
from tests.support.rag import Project, question


def ask(gw: RunningGateway, key: str, q: str, top_k: int = 2, **kwargs: object) -> object:
    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=key, max_retries=0)
    return client.chat.completions.create(
        model="math-lora", max_tokens=16, temperature=0,
        messages=[{"role": "user", "content": q}],
        extra_body={"rag": {"collection": "filings", "top_k": top_k}}, **kwargs)


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
    assert len(citations) == 2 and answer.model_extra["left_out"] == []  # type: ignore[attr-defined]
    # the retrieved passages reached the model: the prompt grew by their tokens
    assert answer.usage.prompt_tokens > plain.usage.prompt_tokens + 50  # type: ignore[attr-defined]

    chunks = list(ask(gw, gw.key, q["question"], stream=True))
    assert chunks[0].model_extra["citations"][0]["source"] == q["source"]  # type: ignore[index]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def test_passages_past_the_models_window_are_left_out(gateway_server: RunningGateway,
                                                      small_project: Project,
                                                      vllm_url: str) -> None:
    """The real engine and twenty retrieved chunks, far more than its window holds: the
    best-ranked go in, counted by vLLM's own /tokenize, the request succeeds, and the response
    names the rest."""
    gw, q = gateway_server, question(small_project)
    gw.gateway.tenancy.grant(gw.project, "filings", kind="collection")
    window = gw.gateway.pool.context_window("math-lora")
    assert window == small_project[0].deployments["local"].max_model_len
    # the engine counts an adapter's chat prompts itself (the gateway's upper bound is only for
    # engines that cannot)
    counted = httpx.post(f"{vllm_url}/tokenize", timeout=30, json={
        "model": "math-lora", "messages": [{"role": "user", "content": q["question"]}]})
    assert counted.status_code == 200 and counted.json()["max_model_len"] == window
    answer = ask(gw, gw.key, "Reading every annual report in the collection, and whatever they "
                             f"say of sector, revenue and risk: {q['question']}", top_k=20)
    cited = answer.model_extra["citations"]  # type: ignore[attr-defined]
    left = answer.model_extra["left_out"]  # type: ignore[attr-defined]
    assert cited and left and len(cited) + len(left) == 20
    assert [c["rank"] for c in left] == list(range(len(cited) + 1, 21))
    assert {c["reason"] for c in left} == {"context budget"}
    assert answer.usage.prompt_tokens + 16 <= window  # type: ignore[attr-defined]


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
