"""The promotion gate: may a candidate adapter replace the champion?

A candidate is promoted only if it beats the reference (the current champion, or the base model
when there is none) by `margin` on the primary metric, and regresses no guard metric by more than
its tolerance. The evaluation asset applies it as a blocking check; the promotion asset again.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from config.evaluations import PromotionSpec
from config.metrics import METRICS


@dataclass
class GateVerdict:
    passed: bool
    reference: str
    reasons: list[str] = field(default_factory=list)

    @property
    def summary(self) -> str:
        verdict = "PROMOTE" if self.passed else "KEEP CHAMPION"
        return f"{verdict} (vs {self.reference}): " + "; ".join(self.reasons)


def gate(scores: dict[str, dict[str, float]], policy: PromotionSpec,
         candidate_is_champion: bool = False) -> GateVerdict:
    """`scores` maps base / candidate / champion to metric -> value."""
    reference = "champion" if "champion" in scores else "base"
    if candidate_is_champion:
        return GateVerdict(True, reference, ["candidate is already the champion"])
    cand, ref = scores["candidate"], scores[reference]
    reasons, passed = [], True
    metric = policy.primary
    if metric not in cand or metric not in ref:
        return GateVerdict(False, reference, [f"primary metric {metric!r} missing from the report"])
    sign = METRICS[metric].direction
    delta = (cand[metric] - ref[metric]) * sign
    ok = delta >= policy.margin
    passed &= ok
    reasons.append(f"{metric} {cand[metric]:.4g} vs {ref[metric]:.4g}: improvement {delta:+.4g} "
                   f"{'>=' if ok else '<'} margin {policy.margin:g}")
    for guard, spec in policy.guards.items():
        if guard not in cand or guard not in ref:
            reasons.append(f"guard {guard}: not measured, skipped")
            continue
        regression = (ref[guard] - cand[guard]) * METRICS[guard].direction
        ok = regression <= spec.tolerance
        passed &= ok
        reasons.append(f"guard {guard} {cand[guard]:.4g} vs {ref[guard]:.4g}: regression "
                       f"{max(regression, 0):.4g} {'<=' if ok else '>'} tolerance "
                       f"{spec.tolerance:g}")
    return GateVerdict(passed, reference, reasons)
