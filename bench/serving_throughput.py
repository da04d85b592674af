"""Serving throughput, measured side by side in one run on 127.0.0.1:

(a) vLLM with requests spread over 3 LoRA adapters vs the base model alone (tokens/s ratio);
(b) the same load through the gateway vs straight to vLLM (tokens/s ratio, added p99 latency).

    .venvs/factory/bin/python -m bench.serving_throughput [--requests 96 --concurrency 16]

Needs a materialized base model and adapter (run `make demo` first). Starts its own vLLM server
on port 8020 (the adapter loaded under three names) and an in-process gateway.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from assets.promotion import Registry
from pipelines.config import load_config
from pipelines.graph import resources_for
from resources.vllm_server import AdapterToServe

PROMPT = "Ava has 7 apples. Ava gets 5 more apples. How many apples does Ava have now?"


@dataclass
class Run:
    tokens_per_s: float
    p50_s: float
    p99_s: float


async def load(url: str, models: list[str], requests: int, concurrency: int, tokens: int,
               headers: dict[str, str] | None = None) -> Run:
    latencies: list[float] = []
    produced = 0
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal produced
        while not queue.empty():
            i = queue.get_nowait()
            body = {"model": models[i % len(models)], "max_tokens": tokens, "temperature": 0,
                    "min_tokens": tokens, "ignore_eos": True,
                    "messages": [{"role": "user", "content": PROMPT}]}
            started = time.perf_counter()
            r = await client.post(f"{url}/v1/chat/completions", json=body, headers=headers)
            r.raise_for_status()
            latencies.append(time.perf_counter() - started)
            produced += r.json()["usage"]["completion_tokens"]

    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=300) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    wall = time.perf_counter() - started
    latencies.sort()
    return Run(produced / wall, statistics.median(latencies),
               latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="factory.yaml")
    parser.add_argument("--requests", type=int, default=96)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--port", type=int, default=8020)
    args = parser.parse_args()

    config = load_config(args.config)
    res = resources_for(config)
    store, vllm = res["store"], res["vllm"]
    deployment = next(iter(config.deployments.values()))
    adapter = deployment.adapters[0]
    champion = Registry(store).champion(adapter)
    if champion is None:
        raise SystemExit(f"no promoted {adapter}; run `make demo` first")
    path = store.local_dir(champion["prefix"])
    rank = store.get_json(f"{champion['prefix']}/adapter_config.json")["r"]
    names = [f"{adapter}-{i}" for i in range(3)]
    base = store.read_ref(f"base_model/{deployment.base_model}")
    print(f"starting vLLM on :{args.port} with {deployment.base_model} + {names} ...")
    state, _ = vllm.ensure(
        "bench", base_name=deployment.base_model, base_dir=store.local_dir(base["prefix"]),
        base_version=base["version"], adapters=[AdapterToServe(n, champion["version"], path, rank)
                                                for n in names],
        host="127.0.0.1", port=args.port, max_model_len=deployment.max_model_len,
        max_loras=4, kv_cache_gib=deployment.kv_cache_gib, extra_args=[],
        startup_timeout_s=300, log=type("Log", (), {"info": staticmethod(print)})())
    try:
        shape = (args.requests, args.concurrency, args.tokens)
        # warm-up at the measured shape over base and adapters: the engine's first batches of a
        # new size are slow (seconds), and would otherwise be charged to whichever run is first
        asyncio.run(load(state.url, [deployment.base_model, *names], *shape))
        base_run = asyncio.run(load(state.url, [deployment.base_model], *shape))
        lora_run = asyncio.run(load(state.url, names, *shape))
        direct = asyncio.run(load(state.url, names, *shape))
        via_gateway = gateway_run(state.url, names, shape)
    finally:
        vllm.stop("bench")

    print(f"\nload: {args.requests} requests x {args.tokens} tokens, concurrency "
          f"{args.concurrency}")
    print(f"(a) base only:          {base_run.tokens_per_s:8.0f} tok/s  p99 {base_run.p99_s:.2f}s")
    print(f"    over 3 adapters:    {lora_run.tokens_per_s:8.0f} tok/s  p99 {lora_run.p99_s:.2f}s")
    print(f"    ratio adapters/base: {lora_run.tokens_per_s / base_run.tokens_per_s:.2f}  "
          "(goal >= 0.85)")
    print(f"(b) direct to vLLM:     {direct.tokens_per_s:8.0f} tok/s  p99 {direct.p99_s:.2f}s")
    print(f"    through gateway:    {via_gateway.tokens_per_s:8.0f} tok/s  "
          f"p99 {via_gateway.p99_s:.2f}s")
    print(f"    ratio gateway/direct: {via_gateway.tokens_per_s / direct.tokens_per_s:.2f}  "
          f"(goal >= 0.90); added p99 latency {1000 * (via_gateway.p99_s - direct.p99_s):+.0f} ms")


def gateway_run(vllm_url: str, names: list[str], shape: tuple[int, int, int]) -> Run:
    """The gateway as its own process (`factory-gateway serve`), as it runs in production."""
    import subprocess
    import sys

    import yaml

    from gateway.app import build_gateway
    from gateway.settings import load_settings

    with tempfile.TemporaryDirectory() as tmp:
        port = 8021
        config = Path(tmp) / "factory.yaml"
        config.write_text(yaml.safe_dump({"gateway": {
            "database_url": f"sqlite:///{Path(tmp) / 'gw.db'}", "upstreams": [vllm_url],
            "default_rpm": 100_000, "default_tpm": 100_000_000, "port": port}}))
        tenancy = build_gateway(load_settings(config)).tenancy
        tenancy.create_project("bench", owner="bench")
        for name in names:
            tenancy.grant("bench", name)
        key = tenancy.create_key("bench", "bench")["key"]
        server = subprocess.Popen([sys.executable, "-m", "gateway", "--config", str(config),
                                   "serve"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    if time.monotonic() > deadline:
                        raise
                time.sleep(0.5)
            headers = {"authorization": f"Bearer {key}"}
            asyncio.run(load(url, names, 16, 8, 8, headers))
            return asyncio.run(load(url, names, *shape, headers))
        finally:
            server.terminate()
            server.wait(10)


if __name__ == "__main__":
    main()
