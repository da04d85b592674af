"""Adapter delivery through the object store, measured on one running replica in one run:

(a) cold vs resident: the first request naming an adapter the replica has never loaded (the
    resolver downloads it from the store, checks every file's sha256, vLLM loads it, then one
    token) vs the next request to the same adapter, already resident;
(b) promotion to first answer: from promoting a new version in the registry to the first answer
    from that version on the running replica (the deployment's refresh: pull `<name>@<version>`,
    load in place, drop the alias), as `deployment/<name>` does it.

    .venvs/factory/bin/python -m bench.adapter_delivery [--adapters 8]

Needs a materialized base model and promoted adapter (run `make demo` first). Starts one vLLM
server on port 8024 with the resolver on a scratch copy of the store, where the champion is
promoted under `--adapters` names and versions (the project's registry is left alone). Prints
medians and the cold/resident ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time

import httpx

from bench.demo_champion import demo_champion, scratch_registry
from resources import vllm_replica
from resources.vllm_replica import AdapterToServe

PROMPT = "Ava has 7 apples. Ava gets 5 more apples. How many apples does Ava have now?"


def first_token_s(url: str, model: str) -> float:
    started = time.perf_counter()
    response = httpx.post(f"{url}/v1/completions", timeout=300, json={
        "model": model, "prompt": PROMPT, "max_tokens": 1, "temperature": 0})
    response.raise_for_status()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="factory.yaml")
    parser.add_argument("--adapters", type=int, default=8)
    parser.add_argument("--port", type=int, default=8024)
    args = parser.parse_args()

    demo = demo_champion(args.config)
    log = type("Log", (), {"info": staticmethod(print)})()
    names = [f"cold-{i}" for i in range(args.adapters)]
    with scratch_registry(demo) as scratch:
        for name in [*names, "resident"]:
            scratch.promote(name, "v1")
        try:  # started serving one adapter, so its LoRA slots fit the champion's rank
            state, _ = demo.vllm.ensure(
                "bench-delivery", base_name=demo.deployment.base_model,
                base_dir=demo.store.local_dir(demo.base["prefix"]),
                base_version=demo.base["version"],
                adapters=[AdapterToServe("resident", "v1", demo.rank)],
                lora_store=scratch.lora_store, host="127.0.0.1", port=args.port,
                max_model_len=demo.deployment.max_model_len, max_loras=4,
                kv_cache_gib=demo.deployment.kv_cache_gib, extra_args=[],
                startup_timeout_s=300, log=log)
            url = state.url
            first_token_s(url, demo.deployment.base_model)  # warm the engine
            cold, resident = [], []
            for name in names:
                cold.append(first_token_s(url, name))
                resident.append(first_token_s(url, name))
            to_answer = []
            served = {"cold-0": "v1"}
            for version in (f"v{i}" for i in range(2, 2 + args.adapters)):
                promoted = time.perf_counter()
                scratch.promote("cold-0", version)
                vllm_replica.sync(url, served, [AdapterToServe("cold-0", version, demo.rank)],
                                  log)
                first_token_s(url, "cold-0")
                to_answer.append(time.perf_counter() - promoted)
                served["cold-0"] = version
                assert vllm_replica.versions(url)["cold-0"] == version
        finally:
            demo.vllm.stop("bench-delivery", log)

    def ms(values: list[float]) -> str:
        return f"median {1000 * statistics.median(values):.0f} ms (range " \
               f"{1000 * min(values):.0f}-{1000 * max(values):.0f})"

    size = sum(p.stat().st_size for p in demo.weights.iterdir() if p.is_file()) / 2**20
    print(f"\nadapter: {size:.1f} MiB on disk, rank {demo.rank}; {args.adapters} adapters and "
          "as many versions")
    print(f"(a) cold first request (download, verify, load, 1 token): {ms(cold)}")
    print(f"    resident request (1 token):                           {ms(resident)}")
    print(f"    ratio cold/resident: {statistics.median(cold) / statistics.median(resident):.1f}")
    print(f"(b) promotion -> first answer of the new version:         {ms(to_answer)}")


if __name__ == "__main__":
    main()
