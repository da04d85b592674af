"""Serving throughput, measured side by side in one run on 127.0.0.1:

(a) vLLM with requests spread over 3 LoRA adapters vs the base model alone (tokens/s ratio);
(b) the same load through the gateway vs straight to vLLM (tokens/s ratio, added p99 latency);
(c) the LoRA server before the replica's batch-isolation patch (replica/batch_isolation.py,
    switched off with FACTORY_LORA_BATCH_ISOLATION=off) vs after: the same loads, and whether
    the answers of requests that never share a batch are identical on both.

    .venvs/factory/bin/python -m bench.serving_throughput [--requests 96 --concurrency 16]

Needs a materialized base model and adapter (run `make demo` first). Starts two vLLM servers of
the base model, one with LoRA on port 8020 (the champion pulled by the replica's resolver under
three names, promoted in a scratch copy of the store) and one without on 8022 (one at a time;
the LoRA one twice, unpatched first), and a gateway process on 8021, whose own CPU time per
request is printed too. The base model is measured on both: vLLM with --enable-lora is slower
even for requests that use no adapter, so the plain server is the baseline a user compares
against. Each load is warmed up once, then measured in interleaved rounds (per server); the
medians are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.demo_champion import demo_champion, scratch_registry
from replica.batch_isolation import SWITCH
from resources.vllm_replica import AdapterToServe

PROMPT = "Ava has 7 apples. Ava gets 5 more apples. How many apples does Ava have now?"


@dataclass
class Run:
    tokens_per_s: float
    p50_s: float
    p99_s: float
    wall_s: float
    requests: int
    server_cpu_s: float | None = None


async def load(url: str | dict[str, str], models: list[str], requests: int, concurrency: int,
               tokens: int, headers: dict[str, str] | None = None) -> Run:
    """`requests` chat completions of `tokens` tokens each, `concurrency` at a time, cycling
    through `models`, sent to `url` (or to each model's own URL)."""
    latencies: list[float] = []
    produced = 0
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal produced
        while not queue.empty():
            i = queue.get_nowait()
            model = models[i % len(models)]
            body = {"model": model, "max_tokens": tokens, "temperature": 0,
                    "min_tokens": tokens, "ignore_eos": True,
                    "messages": [{"role": "user", "content": PROMPT}]}
            started = time.perf_counter()
            to = url if isinstance(url, str) else url[model]
            r = await client.post(f"{to}/v1/chat/completions", json=body, headers=headers)
            r.raise_for_status()
            latencies.append(time.perf_counter() - started)
            produced += r.json()["usage"]["completion_tokens"]

    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=300) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    wall = time.perf_counter() - started
    latencies.sort()
    return Run(produced / wall, statistics.median(latencies),
               latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], wall, requests)


async def charged_to(server: psutil.Process, run: Coroutine[Any, Any, Any]) -> Any:
    """The load, with the CPU seconds `server` spent while it ran: on a machine this small the
    gateway's CPU is taken from the engine, so its cost per request bounds what it can explain
    of the gateway/direct gap (the rest is the extra hop)."""
    before = tree_cpu_s(server)
    result = await run
    result.server_cpu_s = tree_cpu_s(server) - before
    return result


def tree_cpu_s(process: psutil.Process) -> float:
    """User + system CPU seconds of a process and its children (a proxy may fork workers)."""
    procs = [process, *process.children(recursive=True)]
    return sum(sum(p.cpu_times()[:2]) for p in procs if p.is_running())


def load_arguments(rounds: int) -> argparse.Namespace:
    """The load's shape, the demo's project file and the first port, for a serving benchmark."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="factory.yaml")
    parser.add_argument("--requests", type=int, default=96)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--port", type=int, default=8020)
    return parser.parse_args()


def main() -> None:
    args = load_arguments(rounds=5)

    demo = demo_champion(args.config)
    deployment, vllm, version = demo.deployment, demo.vllm, demo.champion["version"]
    names = [f"{demo.adapter}-{i}" for i in range(3)]
    log = type("Log", (), {"info": staticmethod(print)})()
    shape = (args.requests, args.concurrency, args.tokens)
    with scratch_registry(demo) as scratch:
        for name in names:
            scratch.promote(name, version)

        def start(name: str, port: int, adapters: list[AdapterToServe], patched: bool = True
                  ) -> str:
            """A server of the demo's base model: with LoRA (the adapters) or without."""
            print(f"starting vLLM {name} on :{port} with {deployment.base_model} + "
                  f"{[a.name for a in adapters]}{'' if patched else ', unpatched'} ...")
            os.environ[SWITCH] = "on" if patched else "off"  # the server inherits it
            state, _ = vllm.ensure(
                name, base_name=deployment.base_model,
                base_dir=demo.store.local_dir(demo.base["prefix"]),
                base_version=demo.base["version"], adapters=adapters,
                lora_store=scratch.lora_store, host="127.0.0.1", port=port,
                max_model_len=deployment.max_model_len, max_loras=4 if adapters else 0,
                kv_cache_gib=deployment.kv_cache_gib, extra_args=[], startup_timeout_s=300,
                log=log)
            return state.url

        try:  # one server at a time: vLLM pins both engines to the same core
            plain = start("bench-plain", args.port + 2, [])
            rounds = measure({"plain": lambda: load(plain, [deployment.base_model], *shape)},
                             args.rounds)
            vllm.stop("bench-plain", log)
            served = [AdapterToServe(n, version, demo.rank) for n in names]
            lora = start("bench-unpatched", args.port, served, patched=False)
            unpatched = measure({
                "base_unpatched": lambda: load(lora, [deployment.base_model], *shape),
                "adapters_unpatched": lambda: load(lora, names, *shape)}, args.rounds)
            asked = [deployment.base_model, names[0]]
            before = sequential_answers(lora, asked)
            vllm.stop("bench-unpatched", log)
            lora = start("bench", args.port, served)
            after = sequential_answers(lora, asked)
            with gateway_process(lora, names) as (gateway_url, headers, gateway):
                on_lora = measure({
                    "base": lambda: load(lora, [deployment.base_model], *shape),
                    "adapters": lambda: load(lora, names, *shape),
                    "gateway": lambda: charged_to(gateway, load(gateway_url, names, *shape,
                                                                headers)),
                }, args.rounds)
            rounds = [{**a, **b, **c} for a, b, c in zip(rounds, unpatched, on_lora,
                                                          strict=True)]
        finally:
            os.environ.pop(SWITCH, None)
            for server in ("bench-plain", "bench-unpatched", "bench"):
                vllm.stop(server, log)

    def median(label: str, field: str) -> float:
        return statistics.median(getattr(r[label], field) for r in rounds)

    def ratio(label: str, reference: str) -> float:
        return statistics.median(r[label].tokens_per_s / r[reference].tokens_per_s
                                 for r in rounds)

    print(f"\nload: {args.requests} requests x {args.tokens} tokens, concurrency "
          f"{args.concurrency}; medians of {args.rounds} interleaved rounds")
    for label, title in (("plain", "(a) base, plain vLLM:"), ("base", "    base, LoRA-enabled:"),
                         ("adapters", "    over 3 adapters:"),
                         ("gateway", "(b) adapters, gateway:"),
                         ("base_unpatched", "(c) base, LoRA, unpatched:"),
                         ("adapters_unpatched", "    adapters, unpatched:")):
        print(f"{title:26}{median(label, 'tokens_per_s'):8.0f} tok/s  "
              f"p50 {median(label, 'p50_s'):.2f}s  p99 {median(label, 'p99_s'):.2f}s")
    print(f"    ratio adapters/base (plain vLLM): {ratio('adapters', 'plain'):.2f}  "
          "(goal >= 0.85)")
    print(f"    ratio adapters/base (same LoRA-enabled server): "
          f"{ratio('adapters', 'base'):.2f}")
    added = 1000 * (median("gateway", "p99_s") - median("adapters", "p99_s"))
    print(f"    ratio gateway/direct: {ratio('gateway', 'adapters'):.2f}  (goal >= 0.90); "
          f"added p99 latency {added:+.0f} ms")
    print(f"    unpatched: adapters/base (plain vLLM) {ratio('adapters_unpatched', 'plain'):.2f}, "
          f"base on the LoRA server/plain {ratio('base_unpatched', 'plain'):.2f}; patched: "
          f"base on the LoRA server/plain {ratio('base', 'plain'):.2f}")
    same = sum(a == b for a, b in zip(before, after, strict=True))
    print(f"    sequential answers identical before and after the patch: {same} of {len(after)}")
    cpu_ms = statistics.median(1000 * r["gateway"].server_cpu_s / r["gateway"].requests
                               for r in rounds)
    share = statistics.median(r["gateway"].server_cpu_s / r["gateway"].wall_s for r in rounds)
    print(f"    gateway process CPU: {cpu_ms:.1f} ms per request, {share:.2f} of a core during "
          f"its load ({os.cpu_count()} cores shared with vLLM and this load generator)")


def sequential_answers(url: str, models: list[str]) -> list[str]:
    """Greedy answers to a few prompts, one request at a time (no batch to share)."""
    prompts = [PROMPT, "What is 17 + 25?", "Tom had 20 marbles and lost 8. How many are left?",
               "Write one sentence about the sea."]
    return [httpx.post(f"{url}/v1/chat/completions", timeout=300, json={
        "model": model, "max_tokens": 32, "temperature": 0,
        "messages": [{"role": "user", "content": prompt}]}).json()["choices"][0]["message"]
        ["content"] for model in models for prompt in prompts]


def measure(loads: dict[str, Callable[[], Coroutine[Any, Any, Run]]],
            rounds: int) -> list[dict[str, Run]]:
    """Each load once to warm up (vLLM's first batches of a new size, with or without LoRA, take
    seconds), then `rounds` interleaved rounds, so drift hits every load alike."""
    for run in loads.values():
        asyncio.run(run())
    return [{label: asyncio.run(run()) for label, run in loads.items()} for _ in range(rounds)]


@contextmanager
def gateway_process(vllm_url: str, names: list[str], port: int = 8021, cpus: str | None = None,
                    speech_models: list[str] | None = None,
                    settings: dict[str, Any] | None = None
                    ) -> Iterator[tuple[str, dict[str, str], psutil.Process]]:
    """The gateway as its own process (`factory-gateway serve`), as it runs in production, on
    the `cpus` given (taskset's list) when given; `speech_models` are served as transcription
    models; `settings` are more gateway settings (an OTLP endpoint)."""
    import yaml

    from gateway.app import build_gateway
    from gateway.settings import load_settings

    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "factory.yaml"
        config.write_text(yaml.safe_dump({"gateway": {
            "database_url": f"sqlite:///{Path(tmp) / 'gw.db'}", "upstreams": [vllm_url],
            "default_rpm": 100_000, "default_tpm": 100_000_000, "port": port,
            # admission stays on (counted, reserved, settled); the ceilings just fit the load
            "key_max_in_flight": 1024,
            "project_quota": {"rpm": 100_000, "tpm": 100_000_000, "max_in_flight": 1024},
            **({"speech": {"models": speech_models}} if speech_models else {}),
            **(settings or {})}}))
        tenancy = build_gateway(load_settings(config)).tenancy
        tenancy.create_project("bench", owner="bench")
        for name in names:
            tenancy.grant("bench", name)
        key = tenancy.create_key("bench", "bench")["key"]
        pin = ["taskset", "-c", cpus] if cpus else []
        server = subprocess.Popen([*pin, sys.executable, "-m", "gateway", "--config", str(config),
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
            yield url, {"authorization": f"Bearer {key}"}, psutil.Process(server.pid)
        finally:
            server.terminate()
            server.wait(10)


if __name__ == "__main__":
    main()
