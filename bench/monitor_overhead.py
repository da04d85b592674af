"""What watching costs (issue #44): the gateway's added latency with OpenTelemetry tracing on vs
off, side by side, and the time of the monitor's read-out over a day of 100k requests.

    .venvs/factory/bin/python -m bench.monitor_overhead [--requests 300 --concurrency 1]

Tracing: two gateway processes on core 1, one exporting a span per request over OTLP/gRPC to a
collector in this process (core 0, beside the upstream and the load), one without; interleaved
rounds against the instant upstream (bench/mock_openai.py); medians of the rounds. Goal: p99
+2 ms at most.
Read-out: a gateway database (SQLite) filled with `--records` audit rows spread over 24 hours
across three models, then `gateway.monitoring.series` over the day in hourly windows, the
median of three reads: what one run of the monitor asset asks of the gateway.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import threading
import time
from concurrent import futures
from pathlib import Path
from typing import Any

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


class Collector:
    """An OTLP/gRPC trace collector that counts the spans it receives."""

    def __init__(self) -> None:
        import grpc
        from opentelemetry.proto.collector.trace.v1 import (
            trace_service_pb2,
            trace_service_pb2_grpc,
        )

        self.spans, self.lock = 0, threading.Lock()
        collector = self

        class Service(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request: Any, context: Any) -> Any:  # the service's own name
                with collector.lock:
                    collector.spans += sum(len(scope.spans) for resource in
                                           request.resource_spans
                                           for scope in resource.scope_spans)
                return trace_service_pb2.ExportTraceServiceResponse()

        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Service(), self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()


def readout_seconds(records: int, tmp: Path) -> tuple[float, int]:
    """The median of three reads of a day of `records` requests in hourly windows."""
    from sqlalchemy import insert

    from config.gateway import GatewaySettings
    from gateway.db import AuditRecord, make_engine, session_factory
    from gateway.monitoring import series

    sessions = session_factory(make_engine(GatewaySettings(
        database_url=f"sqlite:///{tmp / 'monitor.db'}").database_url))
    until = time.time()
    rng = random.Random(0)
    rows = [{"ts": until - rng.random() * 86_400, "day": "2026-12-07", "key_id": 1,
             "project_id": 1, "route": "chat.completions", "model": f"adapter-{i % 3}",
             "status": 200 if rng.random() > 0.02 else 502,
             "error": None, "prompt_tokens": 40, "completion_tokens": 60,
             "latency_ms": rng.lognormvariate(6, 0.5), "ttft_ms": rng.lognormvariate(4, 0.5)}
            for i in range(records)]
    with sessions.begin() as s:
        for start in range(0, records, 10_000):
            s.execute(insert(AuditRecord), rows[start:start + 10_000])
    timings = []
    for _ in range(3):
        started = time.perf_counter()
        read = series(sessions, until - 86_400, until, 3600, [f"adapter-{i}" for i in range(3)])
        timings.append(time.perf_counter() - started)
    return statistics.median(timings), read["rows_read"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--port", type=int, default=8050)
    args = parser.parse_args()
    os.sched_setaffinity(0, {int(UPSTREAM_CORE)})
    shape = (args.requests, args.concurrency)
    collector = Collector()
    with tempfile.TemporaryDirectory() as tmp, mock_upstream(args.port, Path(tmp)) as upstream:
        with gateway_process(upstream, list(MODELS), port=args.port + 1, cpus=PROXY_CORE) as (
                off_url, off_headers, off), \
                gateway_process(upstream, list(MODELS), port=args.port + 2, cpus=PROXY_CORE,
                                settings={"otlp_endpoint":
                                          f"http://127.0.0.1:{collector.port}"}) as (
                on_url, on_headers, on):
            wait_ready(off_url, off_headers)
            wait_ready(on_url, on_headers)
            rounds = measure({
                "off": lambda: charged_to(off, stream_load(off_url, off_headers, *shape)),
                "on": lambda: charged_to(on, stream_load(on_url, on_headers, *shape)),
            }, args.rounds)
            time.sleep(6)  # the batching processor's last export
        seconds, read = readout_seconds(args.records, Path(tmp))
    collector.server.stop(None)

    def median(label: str, field: str) -> float:
        return statistics.median(getattr(r[label], field) for r in rounds)

    print(f"\n{args.requests} streamed requests, concurrency {args.concurrency}; medians of "
          f"{args.rounds} interleaved rounds; gateways on core {PROXY_CORE}")
    for label in ("off", "on"):
        cpu = statistics.median(1000 * r[label].server_cpu_s / r[label].requests
                                for r in rounds)
        print(f"tracing {label:3}  {median(label, 'requests_per_s'):7.0f} req/s  p50 "
              f"{median(label, 'p50_ms'):6.2f} ms  p99 {median(label, 'p99_ms'):6.2f} ms  "
              f"CPU {cpu:5.2f} ms/request")
    added50 = statistics.median(r["on"].p50_ms - r["off"].p50_ms for r in rounds)
    added99 = statistics.median(r["on"].p99_ms - r["off"].p99_ms for r in rounds)
    sent = (args.rounds + 1) * args.requests
    print(f"tracing adds p50 {added50:+.2f} ms, p99 {added99:+.2f} ms (goal: p99 +2 ms); "
          f"the collector received {collector.spans} spans of {sent} requests")
    print(f"monitor read-out: {read:,} requests over 24 h in hourly windows, "
          f"{seconds:.2f} s (median of 3)")


if __name__ == "__main__":
    main()
