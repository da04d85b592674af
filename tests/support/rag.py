"""What the RAG tests share: a served small project, a question over its corpus, a gateway whose
model has a small window."""

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from config.gateway import GatewaySettings
from config.schema import FactoryConfig
from gateway.app import build_gateway
from gateway.protocol import RagOptions
from gateway.serving import Gateway
from gateway.upstream import ReplicaPool
from pipelines.graph import resources_for
from tests.support.fake_vllm import FakeVLLM
from tests.support.live_server import serve

Project = tuple[FactoryConfig, object]


def question(project: Project) -> dict[str, str]:
    store = resources_for(project[0])["store"]
    corpus = store.local_dir(store.read_ref("corpus/filings")["prefix"])
    lines = (corpus / "questions.jsonl").read_text().splitlines()
    return next(q for q in map(json.loads, lines) if "chief executive" in q["question"])


WINDOW = 512


LONG_QUESTION = ("Reading the annual reports of every company in the collection, and taking into "
                 "account the sector each one works in, where it is headquartered, the revenue "
                 "and net income it reported, and the principal risk its management names: who "
                 "is the chief executive officer of Acme Holdings?")


def fake_tokens(messages: list[dict[str, str]]) -> int:
    """The fake engine's tokenizer: two bytes a token, and a chat template's markers."""
    return 2 + sum(math.ceil(len(m["content"].encode()) / 2) + 4 for m in messages)


@dataclass
class SmallWindowVLLM(FakeVLLM):
    """A replica whose engine has a 512-token window (listed on its base model only, as vLLM
    does), counts prompts at /tokenize unless `tokenize` is off, and refuses a prompt that does
    not fit, as vLLM does."""

    tokenize: bool = True

    async def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"object": "list", "data": [
                {"id": m, "object": "model", **(
                    {"parent": self.base} if m != self.base else {"max_model_len": WINDOW})}
                for m in self.models]})
        if request.url.path == "/tokenize":
            body = json.loads(request.content)
            self.requests.append({"path": request.url.path, "body": body})
            if not self.tokenize:
                return httpx.Response(404, json={"detail": "Not Found"})
            return httpx.Response(200, json={"count": fake_tokens(body["messages"]),
                                              "max_model_len": WINDOW, "tokens": []})
        if request.url.path == "/v1/chat/completions":
            body = json.loads(request.content)
            if fake_tokens(body["messages"]) + body["max_tokens"] > WINDOW:
                self.requests.append({"path": request.url.path, "body": body})
                return httpx.Response(400, json={
                    "object": "error", "type": "BadRequestError", "code": 400, "message":
                    f"This model's maximum context length is {WINDOW} tokens."})
        return await super().handle(request)


class FakeRetriever:
    """Four filings, best first; `sentences` sets their length (at 10, two fit beside the long
    question)."""

    def __init__(self, sentences: int = 10) -> None:
        self.chunks = [{"source": f"filing-{i:04d}.txt", "chunk_id": f"chunk-{i}", "start": 0,
                        "end": 300, "score": round(0.9 - i / 10, 4),
                        "text": f"Company {i} Annual Report. " + "Revenue grew. " * sentences}
                       for i in range(4)]

    def search(self, options: RagOptions, question: str) -> list[dict[str, Any]]:
        return self.chunks[:options.top_k]


@dataclass
class Served:
    url: str
    key: str
    gateway: Gateway
    fake: SmallWindowVLLM

    @property
    def ranked(self) -> list[dict[str, Any]]:
        return self.gateway.retriever.chunks  # type: ignore[attr-defined]

    def chat(self, **body: Any) -> httpx.Response:
        return httpx.post(f"{self.url}/v1/chat/completions", timeout=30, json=body,
                          headers={"authorization": f"Bearer {self.key}"})


def small_window_gateway(tmp_path: Path) -> Iterator[Served]:
    """The gateway before a SmallWindowVLLM, with a project granted its models, the embedding
    model and the collection."""
    settings = GatewaySettings(database_url=f"sqlite:///{tmp_path / 'gateway.db'}",
                               upstreams=["http://replica-1:8000"], refresh_seconds=3600,
                               object_store=f"file://{tmp_path / 'store'}",
                               audit_dead_letter=str(tmp_path / "dead-letter.jsonl"))
    fake = SmallWindowVLLM(models=("base", "adapter-a"))
    gateway = build_gateway(settings, ReplicaPool(settings.upstreams, 3600,
                                                  transport=fake.transport()))
    gateway.retriever = FakeRetriever()  # type: ignore[assignment]
    for url, gw in serve(settings, gateway):
        t = gw.tenancy
        t.create_project("team", owner="alice")
        for model in ("adapter-a", "base", settings.embedding_model_name):
            t.grant("team", model)
        t.grant("team", "filings", kind="collection")
        yield Served(url, t.create_key("team", "alice")["key"], gw, fake)


SYSTEM = "Answer in one sentence."
