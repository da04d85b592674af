"""The batch leak on the demo's real models, before and after the replica's patch
(replica/batch_isolation.py): six held-out questions asked of the base model alone, then at the
same moment as the same six for the demo's adapter, on a LoRA server with the patch switched
off and on (one LoRA slot, so the slot a base row borrows holds the adapter, as on a replica
whose slots have all been used).

    .venvs/factory/bin/python -m bench.batch_isolation [--config factory.yaml]

Needs `make demo` first. Prints, per server, how many base answers changed in the batch and how
many of those became the adapter's own answer.
"""

from __future__ import annotations

import argparse
import os
from functools import partial
from pathlib import Path

import httpx

from assets.common import current
from bench.demo_champion import demo_champion, scratch_registry
from config.loading import load_config
from replica.batch_isolation import SWITCH
from resources.vllm_replica import AdapterToServe
from worker.batch_canary import alone_then_together
from worker.chat import conversation, scored_rows

QUESTIONS = 6


def answer(url: str, model: str, messages: list[dict[str, str]]) -> str:
    response = httpx.post(f"{url}/v1/chat/completions", timeout=600, json={
        "model": model, "messages": messages, "max_tokens": 32, "temperature": 0})
    response.raise_for_status()
    return response.json()["choices"][0]["message"]["content"]


def base_beside_adapter(url: str, base: str, adapter: str,
                        conversations: list[list[dict[str, str]]]) -> dict[str, list[str]]:
    """The base's answers alone, the adapter's alone, and the base's sent together with the
    adapter's (every request leaves at the same moment)."""
    for_base = [partial(answer, url, base, c) for c in conversations]
    for_adapter = [partial(answer, url, adapter, c) for c in conversations]
    alone, batched = alone_then_together(for_base + for_adapter)
    n = len(conversations)
    return {"alone": alone[:n], "adapter": alone[n:], "batched": batched[:n]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="factory.yaml")
    parser.add_argument("--port", type=int, default=8020)
    args = parser.parse_args()
    demo = demo_champion(args.config)
    deployment, version = demo.deployment, demo.champion["version"]
    trained_on = load_config(args.config).adapters[demo.adapter].dataset
    dataset = demo.store.local_dir(current(demo.store, "dataset", trained_on)["prefix"])
    conversations = [conversation(row)[0]
                     for row in scored_rows(Path(dataset) / "test.jsonl")[:QUESTIONS]]
    log = type("Log", (), {"info": staticmethod(print)})()
    results = {}
    with scratch_registry(demo) as scratch:
        scratch.promote(demo.adapter, version)
        for patched in (False, True):
            name = "bench-isolation" if patched else "bench-isolation-unpatched"
            os.environ[SWITCH] = "on" if patched else "off"  # the server inherits it
            try:
                state, _ = demo.vllm.ensure(
                    name, base_name=deployment.base_model,
                    base_dir=demo.store.local_dir(demo.base["prefix"]),
                    base_version=demo.base["version"],
                    adapters=[AdapterToServe(demo.adapter, version, demo.rank)],
                    lora_store=scratch.lora_store, host="127.0.0.1", port=args.port,
                    max_model_len=deployment.max_model_len, max_loras=1,
                    kv_cache_gib=deployment.kv_cache_gib, extra_args=[],
                    startup_timeout_s=300, log=log)
                results[patched] = base_beside_adapter(state.url, deployment.base_model,
                                                       demo.adapter, conversations)
            finally:
                os.environ.pop(SWITCH, None)
                demo.vllm.stop(name, log)
    print(f"\n{len(conversations)} held-out questions to {deployment.base_model}, alone and "
          f"batched with the same six for {demo.adapter} (greedy, 32 tokens, one LoRA slot)")
    for patched, r in results.items():
        changed = sum(a != b for a, b in zip(r["alone"], r["batched"], strict=True))
        borrowed = sum(b == x for b, x in zip(r["batched"], r["adapter"], strict=True))
        print(f"  {'patched  ' if patched else 'unpatched'}: {changed} of {len(r['alone'])} base "
              f"answers changed in the batch; {borrowed} are the adapter's own answer")
        for a, b in list(zip(r["alone"], r["batched"], strict=True))[:2]:
            print(f"    alone:   {a[:70]!r}\n    batched: {b[:70]!r}")


if __name__ == "__main__":
    main()
