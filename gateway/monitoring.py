"""What the endpoint did, window by window and model by model, from the gateway's own records
(issue #44): requests, errors by kind, latency, time to first token and per output token, tokens,
refusals, and what people said (feedback rate and mean score). The control plane reads it through
the admin API (the monitor asset); the Studio reads its own project's through /studio/api.

Percentiles are computed here from the rows (the audit log keeps each request's latency), not
estimated from histograms: a window of a day holds at most MAX_ROWS requests per read.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import or_, select
from sqlalchemy.orm import sessionmaker

from gateway.db import AuditRecord, Feedback, StoredCompletion

INFERENCE = ("chat.completions", "completions", "embeddings", "audio.transcriptions")
REFUSALS = {401: "auth", 403: "forbidden", 413: "too_large", 429: "rate_limited"}
MAX_ROWS = 500_000
NO_MODEL = "-"  # requests refused before a model was read


@dataclass
class Window:
    """One model's requests in one window."""

    latency: list[float] = field(default_factory=list)
    ttft: list[float] = field(default_factory=list)
    tpot: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    feedback: int = 0
    scores: list[float] = field(default_factory=list)

    def add(self, row: AuditRecord) -> None:
        if row.status in REFUSALS:
            self.refused[REFUSALS[row.status]] += 1
            return
        self.latency.append(row.latency_ms)
        if row.status != 200:
            self.errors[row.error or str(row.status)] += 1
            return
        self.prompt_tokens += row.prompt_tokens
        self.completion_tokens += row.completion_tokens
        if row.ttft_ms is not None:
            self.ttft.append(row.ttft_ms)
            if row.completion_tokens > 1:
                self.tpot.append((row.latency_ms - row.ttft_ms) / (row.completion_tokens - 1))

    def summary(self) -> dict[str, Any]:
        answered = len(self.latency)
        errors = sum(self.errors.values())
        return {"requests": answered + sum(self.refused.values()), "answered": answered,
                "errors": dict(self.errors), "error_rate": rate(errors, answered),
                "refused": dict(self.refused), "latency_ms": percentiles(self.latency),
                "ttft_ms": percentiles(self.ttft), "tpot_ms": percentiles(self.tpot),
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens, "feedback": self.feedback,
                "feedback_rate": rate(self.feedback, answered - errors),
                "scored": len(self.scores),
                "mean_score": round(float(np.mean(self.scores)), 4) if self.scores else None}


def rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def percentiles(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    p50, p95, p99 = np.percentile(np.asarray(values), [50, 95, 99])
    return {"p50": round(float(p50), 2), "p95": round(float(p95), 2),
            "p99": round(float(p99), 2)}


def score_of(feedback: Feedback) -> float | None:
    """One feedback as a number in [0, 1]: its score, a thumb (1 or 0), a correction (0: the
    reply was not right); a comment or a choice alone says nothing of the reply's quality."""
    if feedback.score is not None:
        return feedback.score
    if feedback.rating is not None:
        return 1.0 if feedback.rating == "up" else 0.0
    return 0.0 if feedback.correction else None


def series(sessions: sessionmaker, since: float, until: float, window_s: int,
           models: list[str] | None = None, project_id: int | None = None) -> dict[str, Any]:
    """Every model's windows of `window_s` seconds between `since` and `until` (epoch
    seconds): what the requests of `models` (all when None) did, those of one project only
    when `project_id` is given."""
    windows: dict[tuple[str, int], Window] = defaultdict(Window)

    def window_of(ts: float) -> int:
        return int(since + math.floor((ts - since) / window_s) * window_s)

    with sessions() as s:
        q = (select(AuditRecord).where(AuditRecord.ts >= since, AuditRecord.ts < until,
                                       or_(AuditRecord.route.in_(INFERENCE),
                                           AuditRecord.status.in_(REFUSALS)))
             .order_by(AuditRecord.ts).limit(MAX_ROWS))
        if models is not None:
            q = q.where(AuditRecord.model.in_(models))
        if project_id is not None:
            q = q.where(AuditRecord.project_id == project_id)
        read = 0
        for row in s.scalars(q.execution_options(yield_per=2000)):
            read += 1
            windows[row.model or NO_MODEL, window_of(row.ts)].add(row)
        rated = (select(Feedback, StoredCompletion.model, StoredCompletion.ts)
                 .join(StoredCompletion, (StoredCompletion.id == Feedback.completion_row)
                       & (StoredCompletion.project_id == Feedback.project_id))
                 .where(StoredCompletion.ts >= since, StoredCompletion.ts < until))
        if models is not None:
            rated = rated.where(StoredCompletion.model.in_(models))
        if project_id is not None:
            rated = rated.where(Feedback.project_id == project_id)
        for feedback, model, ts in s.execute(rated.execution_options(yield_per=2000)):
            window = windows[model, window_of(ts)]
            window.feedback += 1
            score = score_of(feedback)
            if score is not None:
                window.scores.append(score)
    by_model: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for (model, start), window in sorted(windows.items()):
        by_model[model].append({"start": start, "end": start + window_s, **window.summary()})
    return {"object": "monitor.series", "since": since, "until": until, "window_s": window_s,
            "rows_read": read, "truncated": read >= MAX_ROWS, "models": dict(by_model)}


def recent_prompts(sessions: sessionmaker, models: list[str], since: float, limit: int
                   ) -> list[str]:
    """The last user turn of the newest kept chats of `models` (only chats a project chose to
    keep: what drift is measured on)."""
    import json

    with sessions() as s:
        rows = s.scalars(select(StoredCompletion.messages).where(
            StoredCompletion.model.in_(models), StoredCompletion.ts >= since)
            .order_by(StoredCompletion.id.desc()).limit(limit))
        prompts = []
        for messages in rows:
            users = [m["content"] for m in json.loads(messages) if m["role"] == "user"]
            if users:
                prompts.append(users[-1])
        return prompts
