"""Prometheus metrics per model: requests, tokens, errors, time to first token, time per token."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("gateway_requests_total", "Requests by route, model, status",
                                ["route", "model", "status"], registry=self.registry)
        self.tokens = Counter("gateway_tokens_total", "Tokens by model and kind",
                              ["model", "kind"], registry=self.registry)
        self.errors = Counter("gateway_errors_total", "Errors by model and code",
                              ["model", "code"], registry=self.registry)
        self.ttft = Histogram("gateway_time_to_first_token_seconds", "TTFT of streamed answers",
                              ["model"], registry=self.registry,
                              buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.tpot = Histogram("gateway_time_per_output_token_seconds", "Decode time per token",
                              ["model"], registry=self.registry,
                              buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25))
        self.latency = Histogram("gateway_request_seconds", "End-to-end latency",
                                 ["route", "model"], registry=self.registry)
