"""What a request did, accounted for once at its end: the in-flight slot given back, the token
reservation settled to the real usage, Prometheus metrics (labelled with served names only) and
the audit row, whose status is the status the client got.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from config.gateway import GatewaySettings
from gateway.admission import Admission
from gateway.audit import AuditWriter
from gateway.capture import Capture
from gateway.db import AuditRecord
from gateway.metrics import GatewayMetrics
from gateway.protocol import valid_name
from gateway.tenancy import Principal
from gateway.tracing import Tracing
from gateway.upstream import ReplicaPool

log = logging.getLogger("gateway.accounting")


@dataclass
class Outcome:
    """What one request did, filled in as it goes and written to the audit log at the end."""

    route: str
    principal: Principal | None = None
    model: str | None = None
    status: int = 200
    error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft_ms: float | None = None
    replica: str | None = None
    prompt_text: str | None = None
    citations: list[dict[str, Any]] | None = None
    left_out: list[dict[str, Any]] | None = None  # retrieved passages the window had no room for
    ticket: str | None = None  # the in-flight slot held
    reserved: int = 0  # tokens reserved at admission
    prompt_estimate: int = 0  # billed as the prompt when the engine never said its count
    audio_seconds: float = 0.0  # decoded audio a transcription was charged for
    captures: list[Capture] = field(default_factory=list)  # answers the project keeps
    started: float = field(default_factory=time.perf_counter)


class Accounting:
    def __init__(self, settings: GatewaySettings, admission: Admission, pool: ReplicaPool,
                 metrics: GatewayMetrics, audit: AuditWriter, tracing: Tracing) -> None:
        self.settings, self.admission, self.pool = settings, admission, pool
        self.metrics, self.audit, self.tracing = metrics, audit, tracing

    def keep(self, outcome: Outcome, captures: list[Capture] | None = None) -> None:
        """Queue the answers the project keeps (all of them unless `captures` says which);
        a stream's are queued before its last event is relayed, so a client that has read the
        stream finds its chat kept."""
        latency_ms = (time.perf_counter() - outcome.started) * 1000
        for capture in outcome.captures if captures is None else captures:
            self.audit.add_later(partial(capture.row, latency_ms, outcome.ttft_ms))
        if captures is None:
            outcome.captures.clear()

    def metric_label(self, model: str | None) -> str:
        """Model names the gateway serves, anything else one `other`: clients choose the names
        they send, and every label value is a time series kept for ever."""
        if model and (model == self.settings.embedding_model_name or self.pool.serves(model)):
            return model
        return "other" if model else "-"

    async def finish(self, outcome: Outcome) -> None:
        """Give back the in-flight slot, settle the tokens, count, and queue the audit row."""
        latency = time.perf_counter() - outcome.started
        p = outcome.principal
        if p is not None:
            if outcome.ticket is not None:
                self.admission.leave(p, outcome.ticket)
                outcome.ticket = None
            if outcome.reserved:
                self.admission.settle(p, outcome.reserved,
                                      outcome.prompt_tokens + outcome.completion_tokens)
        model = self.metric_label(outcome.model)
        self.metrics.requests.labels(outcome.route, model, str(outcome.status)).inc()
        self.metrics.latency.labels(outcome.route, model).observe(latency)
        self.metrics.tokens.labels(model, "prompt").inc(outcome.prompt_tokens)
        self.metrics.tokens.labels(model, "completion").inc(outcome.completion_tokens)
        if outcome.error:
            self.metrics.errors.labels(model, outcome.error).inc()
        if outcome.ttft_ms is not None:
            self.metrics.ttft.labels(model).observe(outcome.ttft_ms / 1000)
            if outcome.completion_tokens > 1:
                decode = latency - outcome.ttft_ms / 1000
                self.metrics.tpot.labels(model).observe(decode / (outcome.completion_tokens - 1))
        if outcome.status == 200 and not outcome.error:
            if any(c.streamed for c in outcome.captures):
                log.info("a stream ended before its last event: its reply is not kept")
            self.keep(outcome, [c for c in outcome.captures if not c.streamed])
        outcome.captures.clear()
        self.tracing.record(outcome.route, {
            "gen_ai.request.model": audited_name(outcome.model),
            "gen_ai.response.model": model if model not in ("other", "-") else None,
            "gen_ai.usage.input_tokens": outcome.prompt_tokens,
            "gen_ai.usage.output_tokens": outcome.completion_tokens,
            "http.response.status_code": outcome.status,
            "adapter_factory.project": p.project if p else None,
            "adapter_factory.key_id": p.key_id if p else None,
            "adapter_factory.ttft_ms": outcome.ttft_ms}, latency, outcome.error)
        self.audit.add(AuditRecord(
            ts=time.time(), day=time.strftime("%Y-%m-%d", time.gmtime()),
            key_id=p.key_id if p else None, project_id=p.project_id if p else None,
            route=outcome.route, model=audited_name(outcome.model),
            status=outcome.status, error=outcome.error, prompt_tokens=outcome.prompt_tokens,
            completion_tokens=outcome.completion_tokens,
            audio_seconds=round(outcome.audio_seconds, 3), latency_ms=latency * 1000,
            ttft_ms=outcome.ttft_ms, replica=outcome.replica,
            prompt_text=outcome.prompt_text.replace("\x00", "\ufffd")
            if outcome.prompt_text else None))


def audited_name(model: str | None) -> str | None:
    """The model name as sent when it is a valid name; otherwise a marker (control characters
    and NUL never reach the database)."""
    if not model:
        return None
    return model if valid_name(model) else "(invalid name)"
