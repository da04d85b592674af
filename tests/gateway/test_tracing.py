"""The gateway's OpenTelemetry spans (issue #44) reach an OTLP/gRPC collector run by the test
(OpenTelemetry's own trace service, on grpcio): one span per request, with the GenAI attributes
and the project, and never the prompt's text; without an endpoint there is no tracer at all."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from config.gateway import GatewaySettings
from gateway.app import build_gateway
from gateway.upstream import ReplicaPool
from tests.support.fake_vllm import FakeVLLM
from tests.support.live_server import serve

SECRET_PROMPT = "my secret prompt " + uuid.uuid4().hex


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """Keeps every span exported to it, flattened to (name, attributes)."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, dict[str, Any], bool]] = []
        self.lock = threading.Lock()

    def Export(self, request: Any, context: Any) -> Any:  # the service's own name
        with self.lock:
            for resource in request.resource_spans:
                for scope in resource.scope_spans:
                    for span in scope.spans:
                        values = {a.key: getattr(a.value, a.value.WhichOneof("value"))
                                  for a in span.attributes}
                        self.spans.append((span.name, values, span.status.code == 2))
        return trace_service_pb2.ExportTraceServiceResponse()


@pytest.fixture
def collector() -> Iterator[tuple[str, Collector]]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    found = Collector()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(found, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"http://127.0.0.1:{port}", found
    finally:
        server.stop(None)


def test_each_request_is_a_span_with_the_genai_attributes_and_no_text(
        collector: tuple[str, Collector], tmp_path: Path) -> None:
    endpoint, found = collector
    settings = GatewaySettings(database_url=f"sqlite:///{tmp_path / 'gateway.db'}",
                               upstreams=["http://replica-1:8000"], refresh_seconds=3600,
                               audit_dead_letter=str(tmp_path / "dead-letter.jsonl"),
                               otlp_endpoint=endpoint)
    gateway = build_gateway(settings, ReplicaPool(settings.upstreams, 3600,
                                                  transport=FakeVLLM().transport()))
    for url, running in serve(settings, gateway):
        t = running.tenancy
        t.create_project("traced", owner="alice")
        t.grant("traced", "adapter-a")
        key = t.create_key("traced", "alice")["key"]
        with httpx.Client(base_url=url, headers={"authorization": f"Bearer {key}"}) as http:
            assert http.post("/v1/chat/completions", json={
                "model": "adapter-a", "max_tokens": 3,
                "messages": [{"role": "user", "content": SECRET_PROMPT}]}).status_code == 200
            assert http.post("/v1/chat/completions", json={
                "model": "adapter-z", "messages": [{"role": "user", "content": "x"}]}
            ).status_code == 404
        running.tracing.flush()
    answered, refused = found.spans
    assert answered[0] == "chat adapter-a" and not answered[2]
    assert {k: answered[1][k] for k in (
        "gen_ai.operation.name", "gen_ai.request.model", "gen_ai.response.model",
        "gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens", "adapter_factory.project",
        "http.response.status_code")} == {
        "gen_ai.operation.name": "chat", "gen_ai.request.model": "adapter-a",
        "gen_ai.response.model": "adapter-a", "gen_ai.usage.input_tokens": 10,
        "gen_ai.usage.output_tokens": 3, "adapter_factory.project": "traced",
        "http.response.status_code": 200}
    assert refused[2] and refused[1]["error.type"] == "model_not_found"
    assert not any(SECRET_PROMPT in str(v) for _, values, _ in found.spans
                   for v in values.values())


def test_without_an_endpoint_nothing_is_traced(tmp_path: Path) -> None:
    settings = GatewaySettings(database_url=f"sqlite:///{tmp_path / 'gateway.db'}",
                               upstreams=["http://replica-1:8000"])
    assert build_gateway(settings, ReplicaPool(settings.upstreams, 3600, transport=FakeVLLM(
        ).transport())).tracing.tracer is None
