"""OpenTelemetry spans of the gateway's requests (issue #44): one span per request, with the
attributes of OpenTelemetry's GenAI semantic conventions (operation, model asked for and model
that answered, input and output tokens, error type) and the project and key it was billed to,
exported over OTLP/gRPC to `otlp_endpoint` (Phoenix, Jaeger, Langfuse, an OpenTelemetry
collector). Off unless that is set. A span never holds prompt or reply text.

The span is made when the request is accounted for (gateway/accounting.py), with the request's
own start and end times, and handed to a batching processor: exporting never runs on the request
path, and a collector that is down costs dropped spans, not latency.
"""

from __future__ import annotations

import time
from typing import Any

from config.gateway import GatewaySettings

OPERATIONS = {"chat.completions": "chat", "completions": "text_completion",
              "embeddings": "embeddings", "audio.transcriptions": "transcription"}


class Tracing:
    def __init__(self, settings: GatewaySettings) -> None:
        self.provider: Any = None
        self.tracer: Any = None
        if settings.otlp_endpoint:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor

            self.provider = TracerProvider(resource=Resource.create({
                "service.name": settings.otlp_service_name}))
            self.provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(
                endpoint=settings.otlp_endpoint,
                insecure=settings.otlp_endpoint.startswith("http://"))))
            self.tracer = self.provider.get_tracer("adapter-factory.gateway")

    def record(self, route: str, attributes: dict[str, Any], latency_s: float,
               failed: str | None) -> None:
        """One request's span, ended now and begun `latency_s` ago."""
        if self.tracer is None:
            return
        from opentelemetry.trace import SpanKind, Status, StatusCode

        ended = time.time_ns()
        operation = OPERATIONS.get(route, route)
        model = attributes.get("gen_ai.request.model")
        span = self.tracer.start_span(
            f"{operation} {model}" if model else operation, kind=SpanKind.SERVER,
            start_time=ended - int(latency_s * 1e9),
            attributes={"gen_ai.operation.name": operation, "gen_ai.provider.name": "vllm",
                        **{k: v for k, v in attributes.items() if v is not None}})
        if failed:
            span.set_attribute("error.type", failed)
            span.set_status(Status(StatusCode.ERROR))
        span.end(end_time=ended)

    def flush(self) -> None:
        if self.provider is not None:
            self.provider.force_flush()

    def shutdown(self) -> None:
        if self.provider is not None:
            self.provider.shutdown()
