"""Every metric the evaluation measures, in one table: how people read it, which way is better,
what must be configured for it to be measured, and whether a promotion may use it. Config
validation, the promotion gate and the evaluation report read this table. The metrics scored
per reply come from worker/harness_metrics.py's table (a row and a scoring function there); the
others are measured by the harness or the judge and are rows here.
"""

from __future__ import annotations

from dataclasses import dataclass

from worker.harness_metrics import REPLY_METRICS


@dataclass(frozen=True)
class Metric:
    label: str  # in reports
    higher_is_better: bool
    needs: str | None = None  # the local task (or setting) that must run for it to exist
    declared: bool = True  # may be named as a promotion's primary metric or a guard
    in_table: bool = True  # a column of the report's score table

    @property
    def direction(self) -> int:
        return 1 if self.higher_is_better else -1


# The report's columns follow this order.
METRICS: dict[str, Metric] = {
    **{name: Metric(m.label, m.higher_is_better) for name, m in REPLY_METRICS.items()},
    "mc_accuracy": Metric("MC accuracy", True, needs="multiple_choice"),
    "perplexity": Metric("perplexity", False),
    "seconds_per_sample": Metric("s / sample", False),
    "judge_score": Metric("judge score", True, needs="judge", in_table=False),
    # guarded through `safety.tolerance`, not named in `promotion`
    "safety_pass_rate": Metric("safety pass rate", True, needs="judge", declared=False,
                               in_table=False),
}

DECLARED = tuple(name for name, metric in METRICS.items() if metric.declared)
SERVED = tuple(name for name, metric in REPLY_METRICS.items() if metric.served)  # endpoint-scored
