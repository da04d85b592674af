"""What a deployment's monitor watches and when it speaks (issue #44): thresholds on what the
gateway measured, drift of live prompts from the training prompts, the webhooks alerts go to, and
what a failed check sets in motion."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from config.common import Strict


class Thresholds(Strict):
    """A check fails past these, over the lookback; feedback counts only with enough of it."""

    error_rate: float = Field(0.05, ge=0, le=1, description="errors / answered requests")
    latency_p99_ms: float = Field(30_000, gt=0, description="the worst window's p99")
    min_feedback_score: float = Field(0.5, ge=0, le=1, description="mean of ratings in [0, 1]")
    min_feedback: int = Field(10, ge=1, description="fewer ratings than this judge nothing")


class DriftSpec(Strict):
    """Recent kept prompts against the served adapter's training prompts, both embedded with the
    platform's embedding model: an energy-distance permutation test (scipy)."""

    p_value: float = Field(0.01, gt=0, lt=1, description="below it, the prompts drifted")
    min_prompts: int = Field(30, ge=5, description="fewer recent prompts test nothing")
    sample: int = Field(200, ge=10, le=2000, description="prompts taken from each side")
    resamples: int = Field(999, ge=99, le=100_000)
    shown: int = Field(5, ge=0, le=50, description="most drifted prompts shown (PII-scrubbed)")
    seed: int = 0


class MonitorSpec(Strict):
    schedule: str = Field("*/15 * * * *", description="cron (UTC) of the monitor's runs")
    window_s: Literal[60, 300, 900, 3600, 21_600, 86_400] = 3600
    lookback_hours: int = Field(24, ge=1, le=744)
    thresholds: Thresholds = Thresholds()
    drift: DriftSpec | None = DriftSpec()
    on_failure: Literal["alert", "reevaluate", "retrain"] = Field(
        "alert", description="besides the alert: re-run the served evaluation, or rebuild the "
                             "served adapters' datasets (and retrain, gate, promote), through "
                             "Declarative Automation")


class Webhook(Strict):
    url: str = Field(pattern=r"^https?://", description="where alerts are POSTed")
    format: Literal["slack", "json"] = Field(
        "json", description="slack: {text} (Slack, Mattermost, Teams workflows); json: the "
                            "incident as an object")
    timeout_s: float = Field(5.0, gt=0, le=60)
    retries: int = Field(2, ge=0, le=5)


class AlertsSpec(Strict):
    """The platform's webhooks (never a tenant's): one message when a monitor check starts
    failing, one when it passes again."""

    webhooks: list[Webhook] = Field(default_factory=list)
