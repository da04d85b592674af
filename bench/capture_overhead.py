"""What keeping chats costs (issue #43): the gateway's added latency with capture on vs off, side
by side in one gateway process, and rows per second from the capture store to a curated dataset.

    .venvs/factory/bin/python -m bench.capture_overhead [--requests 1000 --concurrency 16]

The upstream (bench/mock_openai.py) streams a fixed 16-token answer at once, so the time a client
waits beyond a direct request is the gateway's. Cores (taskset): the upstream and this load
generator on core 0, the gateway alone on core 1. Two projects on the same gateway: one keeps
nothing (capture off), one keeps every chat (capture all: each stream collected and written
whole by the audit writer's thread). Each load is warmed up, then the three run in interleaved
rounds; medians of the rounds are printed. Then distinct chats are kept and rated, and the
dataset side is timed: the admin API's feedback export read page by page (ingest/traffic.py)
and curated into SFT rows (curation/pipeline.py), rows per second.
Goals: capture adds at most +1 ms at p50 and +5 ms at p99.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from bench.gateway_overhead import (
    PROXY_CORE,
    UPSTREAM_CORE,
    measure,
    mock_upstream,
    stream_load,
    wait_ready,
)
from bench.mock_openai import MODELS
from bench.serving_throughput import charged_to, gateway_process

ADMIN_ENV = "FACTORY_GATEWAY_ADMIN_TOKEN"


def keeping_project(url: str, admin: dict[str, str]) -> dict[str, str]:
    """A second project on the running gateway that keeps every chat; its key's headers."""
    with httpx.Client(base_url=url, headers=admin, timeout=30) as http:
        for method, path, body in (
                ("POST", "/admin/projects", {"name": "kept", "owner": "bench", "quota": {
                    "rpm": 100_000, "tpm": 100_000_000, "max_in_flight": 1024}}),
                ("POST", "/admin/projects/kept/grants", {"name": MODELS[0]}),
                ("PUT", "/admin/projects/kept/capture", {"policy": "all"})):
            http.request(method, path, json=body).raise_for_status()
        key = http.post("/admin/projects/kept/keys", json={"user": "bench"}).json()["key"]
    return {"authorization": f"Bearer {key}"}


async def rated_chats(url: str, headers: dict[str, str], count: int) -> None:
    """`count` distinct kept chats, each rated up (what a dataset from traffic reads)."""
    todo = iter(range(count))

    async def worker(client: httpx.AsyncClient) -> None:
        for i in todo:
            chat = await client.post("/v1/chat/completions", json={
                "model": MODELS[0], "max_tokens": 16,
                "messages": [{"role": "user", "content": f"Question {i}: {uuid.uuid4().hex}"}]})
            chat.raise_for_status()
            rated = await client.post(f"/v1/chat/completions/{chat.json()['id']}/feedback",
                                      json={"rating": "up"})
            rated.raise_for_status()

    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as client:
        await asyncio.gather(*(worker(client) for _ in range(16)))


def dataset_rows_per_s(url: str) -> tuple[int, float, float]:
    """Rows read from the export and curated; rows/s of the read alone and of read + curate."""
    from config.datasets import DatasetSpec, TrafficSource
    from config.gateway import GatewaySettings
    from curation.pipeline import curate
    from ingest.traffic import GatewayTraffic
    from resources.gateway_admin import GatewayAdmin

    source = TrafficSource(traffic="kept")
    spec = DatasetSpec(kind="sft", sources=[source], dedupe={"near": False})
    admin = GatewayAdmin(GatewaySettings(url=url))
    started = time.perf_counter()
    rows = list(GatewayTraffic(admin.feedback, "sft").records(source))
    read = time.perf_counter() - started
    curated = curate(iter(rows), spec, None, None)
    total = time.perf_counter() - started
    kept = sum(len(lines) for lines in curated.lines.values())
    return kept, len(rows) / read, kept / total


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rated", type=int, default=2000)
    parser.add_argument("--port", type=int, default=8040)
    args = parser.parse_args()
    os.environ[ADMIN_ENV] = admin_token = f"bench-{uuid.uuid4().hex}"  # the gateway inherits it
    os.sched_setaffinity(0, {int(UPSTREAM_CORE)})
    shape = (args.requests, args.concurrency)
    with tempfile.TemporaryDirectory() as tmp, \
            mock_upstream(args.port, Path(tmp)) as upstream, \
            gateway_process(upstream, list(MODELS), port=args.port + 1, cpus=PROXY_CORE) as (
                url, off_headers, gateway):
        wait_ready(url, off_headers)
        on_headers = keeping_project(url, {"authorization": f"Bearer {admin_token}"})
        rounds = measure({
            "direct": lambda: stream_load(upstream, {}, *shape),
            "off": lambda: charged_to(gateway, stream_load(url, off_headers, *shape)),
            "on": lambda: charged_to(gateway, stream_load(url, on_headers, *shape)),
        }, args.rounds)
        asyncio.run(rated_chats(url, on_headers, args.rated))
        kept, read_per_s, curated_per_s = dataset_rows_per_s(url)

    def median(label: str, field: str) -> float:
        return statistics.median(getattr(r[label], field) for r in rounds)

    print(f"\n{args.requests} streamed requests (16 tokens each), concurrency "
          f"{args.concurrency}; medians of {args.rounds} interleaved rounds; upstream + load on "
          f"core {UPSTREAM_CORE}, gateway on core {PROXY_CORE}")
    for label, title in (("direct", "direct to upstream"), ("off", "gateway, capture off"),
                         ("on", "gateway, capture all")):
        line = (f"{title:22}{median(label, 'requests_per_s'):8.0f} req/s  "
                f"p50 {median(label, 'p50_ms'):6.1f} ms  p99 {median(label, 'p99_ms'):6.1f} ms")
        if label != "direct":
            cpu = statistics.median(1000 * r[label].server_cpu_s / r[label].requests
                                    for r in rounds)
            line += f"  CPU {cpu:5.2f} ms/request"
        print(line)
    added50 = statistics.median(r["on"].p50_ms - r["off"].p50_ms for r in rounds)
    added99 = statistics.median(r["on"].p99_ms - r["off"].p99_ms for r in rounds)
    ratio = median("on", "requests_per_s") / median("off", "requests_per_s")
    print(f"capture adds p50 {added50:+.2f} ms, p99 {added99:+.2f} ms (goals: +1 ms, +5 ms); "
          f"requests/s on/off {ratio:.2f}")
    print(f"capture store -> dataset: {kept} rated chats; export read {read_per_s:,.0f} rows/s, "
          f"read + curated {curated_per_s:,.0f} rows/s")


if __name__ == "__main__":
    main()
