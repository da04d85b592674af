"""What a proxy adds, isolated: our gateway and LiteLLM's proxy in front of an instant upstream.

    infra/setup-envs.sh bench-litellm     # once: LiteLLM in its own environment
    .venvs/factory/bin/python -m bench.gateway_overhead [--requests 1000 --concurrency 16]

The upstream (bench/mock_openai.py) streams a fixed 16-token answer at once, so a client's time
beyond a direct request is the proxy's. Cores (taskset): the upstream and this load generator on
core 0, the proxy under test alone on core 1. Both proxies check a key on every request and
enforce a rate limit: ours with a project key (admission counts, in-flight slots, token
reservation and settlement, audit rows; SQLite, as embedded), LiteLLM with its master key and a
deployment rpm/tpm limit (its per-key limits need its PostgreSQL schema through Prisma, whose
query engine is downloaded at run time: not possible on this machine). Each load is warmed up,
then the three run in interleaved rounds; medians of the rounds are printed: requests/s,
latency to the end of the stream (p50/p99) and what each proxy adds over direct, and the
proxy's CPU per request (its whole process tree).
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
import yaml

from bench.mock_openai import MODELS
from bench.serving_throughput import charged_to, gateway_process

REPO = Path(__file__).resolve().parents[1]
LITELLM = REPO / ".venvs" / "bench-litellm" / "bin" / "litellm"
UPSTREAM_CORE, PROXY_CORE = "0", "1"


@dataclass
class Run:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    server_cpu_s: float = 0.0  # the proxy's process tree, set by charged_to


async def stream_load(url: str, headers: dict[str, str], requests: int,
                      concurrency: int) -> Run:
    """`requests` streamed chat completions, `concurrency` at a time, each read to its end."""
    body = {"model": MODELS[0], "max_tokens": 16, "stream": True,
            "messages": [{"role": "user", "content": "Say something."}]}
    latencies: list[float] = []
    todo = iter(range(requests))

    async def worker(client: httpx.AsyncClient) -> None:
        for _ in todo:
            started = time.perf_counter()
            async with client.stream("POST", f"{url}/v1/chat/completions", json=body,
                                     headers=headers) as response:
                if response.status_code != 200:
                    raise RuntimeError(f"{url}: {response.status_code} "
                                       f"{(await response.aread())[:300]!r}")
                async for _ in response.aiter_raw():
                    pass
            latencies.append(time.perf_counter() - started)

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    wall = time.perf_counter() - started
    latencies.sort()
    return Run(requests / wall, 1000 * statistics.median(latencies),
               1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], requests)


def wait_ready(url: str, headers: dict[str, str] | None = None, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(f"{url}/v1/models", headers=headers, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer /v1/models in {timeout_s:.0f} s")
        time.sleep(0.5)


@contextmanager
def process(cmd: list[str], cpus: str, log: Path) -> Iterator[psutil.Process]:
    with log.open("w") as out:
        proc = subprocess.Popen(["taskset", "-c", cpus, *cmd], stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield psutil.Process(proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextmanager
def mock_upstream(port: int, tmp: Path) -> Iterator[str]:
    """The instant upstream (bench/mock_openai.py) on UPSTREAM_CORE, ready; its URL."""
    with process([sys.executable, "-m", "uvicorn", "bench.mock_openai:app", "--port", str(port),
                  "--loop", "uvloop", "--http", "httptools", "--log-level", "warning",
                  "--no-access-log"], UPSTREAM_CORE, tmp / "upstream.log"):
        upstream = f"http://127.0.0.1:{port}"
        wait_ready(upstream)
        yield upstream


@contextmanager
def litellm_proxy(upstream: str, port: int, tmp: Path
                  ) -> Iterator[tuple[str, dict[str, str], psutil.Process]]:
    master_key = "sk-bench-master-key"
    config = tmp / "litellm.yaml"
    config.write_text(yaml.safe_dump({
        "model_list": [{"model_name": MODELS[0], "litellm_params": {
            "model": f"openai/{MODELS[0]}", "api_base": f"{upstream}/v1", "api_key": "none",
            "rpm": 1_000_000, "tpm": 1_000_000_000}}],
        "general_settings": {"master_key": master_key},
        "litellm_settings": {"telemetry": False, "drop_params": True},
    }))
    env_log = tmp / "litellm.log"
    with process([str(LITELLM), "--config", str(config), "--host", "127.0.0.1", "--port",
                  str(port), "--num_workers", "1"], PROXY_CORE, env_log) as proc:
        url, headers = f"http://127.0.0.1:{port}", {"authorization": f"Bearer {master_key}"}
        try:
            wait_ready(url, headers)
        except TimeoutError as exc:
            tail = env_log.read_text()[-2000:]
            raise SystemExit(f"{exc}; LiteLLM's log: {env_log}\n{tail}") from exc
        yield url, headers, proc


def measure(loads: dict[str, Callable[[], Coroutine[Any, Any, Run]]],
            rounds: int) -> list[dict[str, Run]]:
    for run in loads.values():
        asyncio.run(run())
    return [{label: asyncio.run(run()) for label, run in loads.items()} for _ in range(rounds)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--port", type=int, default=8030)
    args = parser.parse_args()
    if not LITELLM.exists():
        raise SystemExit(f"{LITELLM} missing: run `infra/setup-envs.sh bench-litellm` first")
    os.sched_setaffinity(0, {int(UPSTREAM_CORE)})  # the load generator beside the upstream
    shape = (args.requests, args.concurrency)
    with tempfile.TemporaryDirectory() as tmp, \
            mock_upstream(args.port, Path(tmp)) as upstream, \
            gateway_process(upstream, list(MODELS), port=args.port + 1, cpus=PROXY_CORE) as (
                ours_url, ours_headers, ours), \
            litellm_proxy(upstream, args.port + 2, Path(tmp)) as (lite_url, lite_headers, lite):
        wait_ready(ours_url, ours_headers)
        rounds = measure({
            "direct": lambda: stream_load(upstream, {}, *shape),
            "ours": lambda: charged_to(ours, stream_load(ours_url, ours_headers, *shape)),
            "litellm": lambda: charged_to(lite, stream_load(lite_url, lite_headers, *shape)),
        }, args.rounds)

    def median(label: str, field: str) -> float:
        return statistics.median(getattr(r[label], field) for r in rounds)

    print(f"\n{args.requests} streamed requests (16 tokens each), concurrency {args.concurrency}; "
          f"medians of {args.rounds} interleaved rounds; upstream + load on core "
          f"{UPSTREAM_CORE}, proxy on core {PROXY_CORE}")
    for label, title in (("direct", "direct to upstream"), ("ours", "our gateway"),
                         ("litellm", "LiteLLM proxy")):
        line = (f"{title:20}{median(label, 'requests_per_s'):8.0f} req/s  "
                f"p50 {median(label, 'p50_ms'):6.1f} ms  p99 {median(label, 'p99_ms'):6.1f} ms")
        if label != "direct":
            added50 = statistics.median(r[label].p50_ms - r["direct"].p50_ms for r in rounds)
            added99 = statistics.median(r[label].p99_ms - r["direct"].p99_ms for r in rounds)
            cpu = statistics.median(1000 * r[label].server_cpu_s / r[label].requests
                                    for r in rounds)
            line += (f"  added p50 {added50:+6.1f} ms  p99 {added99:+6.1f} ms  "
                     f"CPU {cpu:5.2f} ms/request")
        print(line)
    ours_cpu = statistics.median(r["ours"].server_cpu_s / r["ours"].requests for r in rounds)
    lite_cpu = statistics.median(r["litellm"].server_cpu_s / r["litellm"].requests
                                 for r in rounds)
    print(f"ratio ours/LiteLLM: requests/s "
          f"{median('ours', 'requests_per_s') / median('litellm', 'requests_per_s'):.2f}, "
          f"CPU per request {ours_cpu / lite_cpu:.2f} (goals: added p50 <= 2 ms, p99 <= 10 ms, "
          "CPU below LiteLLM's)")


if __name__ == "__main__":
    main()
