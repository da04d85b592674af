"""RAG on a model with a small context window (a fake vLLM replica, a fake retriever; no graph):
the gateway keeps the best-ranked passages that fit beside the question and the reply, names the
ones it left out, and refuses with a 400 a question that cannot fit at all; the embedding model is
marked as such and refused for chats."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from gateway.protocol import ChatMessage
from gateway.rag import augment, upper_bound_tokens
from tests.support.rag import (
    LONG_QUESTION,
    SYSTEM,
    WINDOW,
    FakeRetriever,
    Served,
    fake_tokens,
    small_window_gateway,
)

MAX_TOKENS = 64












@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    yield from small_window_gateway(tmp_path)




def ask(served: Served, question: str = LONG_QUESTION, **extra: Any) -> Any:
    client = openai.OpenAI(base_url=f"{served.url}/v1", api_key=served.key, max_retries=0)
    return client.chat.completions.create(
        model="adapter-a", max_tokens=MAX_TOKENS, temperature=0,
        messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}],
        extra_body={"rag": {"collection": "filings", "top_k": 4}}, **extra)


def prompt_with(served: Served, passages: int, question: str = LONG_QUESTION) -> list[ChatMessage]:
    return augment([ChatMessage(role="system", content=SYSTEM),
                    ChatMessage(role="user", content=question)], served.ranked[:passages])


def dumped(messages: list[ChatMessage]) -> list[dict[str, str]]:
    return [m.model_dump() for m in messages]


def test_a_long_question_on_a_small_model_keeps_the_best_passages_that_fit(
        served: Served) -> None:
    assert served.gateway.pool.context_window("adapter-a") == WINDOW  # the base's, via /v1/models
    assert fake_tokens(dumped(prompt_with(served, 4))) + MAX_TOKENS > WINDOW  # all would not fit
    answer = ask(served)
    assert answer.choices[0].message.content
    sent = served.fake.sent("/v1/chat/completions")[-1]
    assert fake_tokens(sent["messages"]) + sent["max_tokens"] <= WINDOW
    cited, left = answer.model_extra["citations"], answer.model_extra["left_out"]
    kept = len(cited)
    # the best-ranked passages went in, the lowest-ranked whole ones were left out, and the
    # response says which and why
    assert kept and left and kept + len(left) == len(served.ranked)
    assert [c["chunk_id"] for c in cited + left] == [c["chunk_id"] for c in served.ranked]
    assert [c["rank"] for c in left] == list(range(kept + 1, len(served.ranked) + 1))
    assert {c["reason"] for c in left} == {"context budget"}
    assert sent["messages"] == dumped(prompt_with(served, kept))
    # nothing was left out that had room: one passage more would not have fitted
    assert fake_tokens(dumped(prompt_with(served, kept + 1))) + MAX_TOKENS > WINDOW

    chunks = list(ask(served, stream=True))
    assert chunks[0].model_extra["citations"] == cited
    assert chunks[0].model_extra["left_out"] == left


def test_a_replica_that_cannot_count_gets_an_upper_bound(served: Served) -> None:
    """No /tokenize (an engine that is not vLLM): passages are fitted by the byte bound, which
    never undercounts, so fewer go in than would fit, but the prompt fits; a question the bound
    cannot place goes without passages, for the engine to judge, rather than a 400 on a guess."""
    served.fake.tokenize = False
    served.ranked[:] = FakeRetriever(sentences=3).chunks
    short = "Who is the chief executive officer of Company 0?"
    answer = ask(served, question=short)
    sent = [ChatMessage(**m) for m in served.fake.sent("/v1/chat/completions")[-1]["messages"]]
    assert upper_bound_tokens(sent) + MAX_TOKENS <= WINDOW
    assert upper_bound_tokens(sent) >= fake_tokens(dumped(sent))
    assert len(answer.model_extra["citations"]) == 1 and len(answer.model_extra["left_out"]) == 3
    assert fake_tokens(dumped(prompt_with(served, 4, short))) + MAX_TOKENS <= WINDOW

    answer = ask(served)  # the long question: over the bound even alone, yet it fits
    assert upper_bound_tokens(prompt_with(served, 0)) + MAX_TOKENS > WINDOW
    assert answer.choices[0].message.content
    assert answer.model_extra["citations"] == [] and len(answer.model_extra["left_out"]) == 4


def test_a_question_that_cannot_fit_is_a_400_naming_the_limit(served: Served) -> None:
    r = served.chat(model="adapter-a", max_tokens=MAX_TOKENS,
                    messages=[{"role": "user", "content": LONG_QUESTION * 4}],
                    rag={"collection": "filings"})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "context_length_exceeded" and error["param"] == "messages"
    assert f"maximum context length is {WINDOW} tokens" in error["message"]
    assert served.fake.sent("/v1/chat/completions") == []  # refused before the engine


def test_the_embedding_model_is_marked_and_cannot_chat(served: Served) -> None:
    embedding = served.gateway.settings.embedding_model_name
    with httpx.Client(base_url=served.url,
                      headers={"authorization": f"Bearer {served.key}"}) as client:
        models = {m["id"]: m["type"] for m in client.get("/v1/models").json()["data"]}
    assert models == {"adapter-a": "chat", "base": "chat", embedding: "embedding"}
    hello = [{"role": "user", "content": "hi"}]
    for body in ({"model": embedding}, {"model": "adapter-a", "compare_with": embedding}):
        r = served.chat(messages=hello, max_tokens=4, **body)
        assert r.status_code == 400, r.text
        assert r.json()["error"]["code"] == "not_a_generative_model"
    assert served.fake.sent("/v1/chat/completions") == []
