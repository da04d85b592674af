"""Two tenants on one replica: project A's adapter traffic never answers project B's base-model
requests. Through the real gateway and the small project's real vLLM server, every request of a
concurrent mixed batch (base, adapter and mixture; chat and completions; streamed and not; short
and long prompts, so prefill and decode share steps) answers exactly as it does alone (greedy).
Before the replica's patch (replica/batch_isolation.py) project B's base replies came back in
project A's adapter's words."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from functools import partial

import httpx

from worker.batch_canary import alone_then_together

QUESTIONS = ["Ava has 7 apples. Ava gets 5 more apples. How many apples does Ava have now?",
             "Tom had 20 marbles and lost 8. How many marbles are left?",
             "A shop sells 12 pens a day. How many pens does it sell in 3 days? " * 6]


@dataclass(frozen=True)
class Ask:
    key: str
    model: str
    question: str
    chat: bool
    stream: bool

    def send(self, url: str) -> str:
        body: dict = {"model": self.model, "max_tokens": 16, "temperature": 0,
                      "stream": self.stream}
        body |= ({"messages": [{"role": "user", "content": self.question}]} if self.chat
                 else {"prompt": self.question})
        path = "/v1/chat/completions" if self.chat else "/v1/completions"
        headers = {"authorization": f"Bearer {self.key}"}
        if not self.stream:
            response = httpx.post(f"{url}{path}", json=body, headers=headers, timeout=120)
            response.raise_for_status()
            choice = response.json()["choices"][0]
            return choice["message"]["content"] if self.chat else choice["text"]
        parts = []
        with httpx.stream("POST", f"{url}{path}", json=body, headers=headers,
                          timeout=120) as response:
            response.raise_for_status()
            for line in response.iter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    for choice in json.loads(line[6:]).get("choices", []):
                        parts.append((choice.get("delta", {}).get("content") if self.chat
                                      else choice.get("text")) or "")
        return "".join(parts)


def project_with(gateway: object, owner: str, models: list[str]) -> dict[str, str]:
    """A project granted `models`, with a key of its own for each (a key has at most 8
    requests in flight)."""
    tenancy = gateway.tenancy  # type: ignore[attr-defined]
    name = f"{owner}-{uuid.uuid4().hex[:8]}"
    tenancy.create_project(name, owner=owner)
    for model in models:
        tenancy.grant(name, model)
    return {model: tenancy.create_key(name, owner)["key"] for model in models}


def test_a_tenants_base_requests_batched_with_anothers_adapters_answer_as_alone(
        gateway_server: object) -> None:
    url, gateway = gateway_server.url, gateway_server.gateway  # type: ignore[attr-defined]
    keys = {**project_with(gateway, "alice", ["math-lora", "math-mix"]),
            **project_with(gateway, "bob", ["tiny"])}
    asks = [Ask(key, model, question, chat, stream) for model, key in keys.items()
            for question in QUESTIONS for chat, stream in ((True, False), (False, True))]
    alone, batched = alone_then_together([partial(ask.send, url) for ask in asks])
    changed = [(a.model, a.question[:30], a.chat, a.stream, x, y)
               for a, x, y in zip(asks, alone, batched, strict=True) if x != y]
    assert changed == []
    base = [x for a, x in zip(asks, alone, strict=True) if a.model == "tiny"]
    lora = [x for a, x in zip(asks, alone, strict=True) if a.model == "math-lora"]
    assert base != lora  # the adapter answers differently: a borrowed adapter would show
