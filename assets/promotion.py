"""The promotion gate, the registry of champions, and the `promotion/<adapter>` asset.

A candidate adapter is promoted only if it beats the reference (the current champion, or the
base model when there is none) by `margin` on the primary metric, and regresses no guard metric
by more than its tolerance. Promotion is an explicit, recorded event (who, when, why); the
deployment serves what the registry says, so a failed gate leaves the champion serving.
"""


import getpass
import time
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from assets.common import current
from assets.model_cards import write_card
from config.evaluations import PromotionSpec
from config.metrics import METRICS
from config.schema import FactoryConfig
from resources.object_store import ObjectStore
from store.backends import ArtifactMissing
from store.keys import registry_key


@dataclass
class Decision:
    passed: bool
    reference: str
    reasons: list[str] = field(default_factory=list)

    @property
    def summary(self) -> str:
        verdict = "PROMOTE" if self.passed else "KEEP CHAMPION"
        return f"{verdict} (vs {self.reference}): " + "; ".join(self.reasons)


def decide(scores: dict[str, dict[str, float]], policy: PromotionSpec,
           candidate_is_champion: bool = False) -> Decision:
    """`scores` maps base / candidate / champion to metric -> value."""
    reference = "champion" if "champion" in scores else "base"
    if candidate_is_champion:
        return Decision(True, reference, ["candidate is already the champion"])
    cand, ref = scores["candidate"], scores[reference]
    reasons, passed = [], True
    metric = policy.primary
    if metric not in cand or metric not in ref:
        return Decision(False, reference, [f"primary metric {metric!r} missing from the report"])
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
    return Decision(passed, reference, reasons)


class Registry:
    """`registry/<adapter>.json`: the champion, the full promotion history and the versions
    trained on data erased since (`erased`: version -> erasure ids)."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    def _key(self, adapter: str) -> str:
        return registry_key(adapter)

    def read(self, adapter: str) -> dict[str, Any]:
        try:
            return self.store.get_json(self._key(adapter))
        except ArtifactMissing:
            return {"champion": None, "history": [], "erased": {}}

    def champion(self, adapter: str) -> dict[str, Any] | None:
        return self.read(adapter)["champion"]

    def promote(self, adapter: str, version: str, prefix: str, why: str,
                scores: dict[str, Any], who: str | None = None) -> dict[str, Any]:
        state = self.read(adapter)
        entry = {"event": "promoted", "version": version, "prefix": prefix,
                 "who": who or getpass.getuser(), "when": time.time(), "why": why,
                 "scores": scores, "previous": (state["champion"] or {}).get("version")}
        state["champion"] = entry
        state["history"].append(entry)
        self.store.put_json(self._key(adapter), state)
        return entry

    def mark_erased(self, adapter: str, versions: list[str], erasure: str) -> None:
        state = self.read(adapter)
        marks = state.setdefault("erased", {})
        for version in versions:
            marks[version] = sorted({*marks.get(version, []), erasure})
        self.store.put_json(self._key(adapter), state)

    def unpublish(self, adapter: str, why: str, who: str | None = None) -> None:
        """No champion: deployments stop serving the adapter at their next materialization."""
        state = self.read(adapter)
        previous = (state["champion"] or {}).get("version")
        state["champion"] = None
        state["history"].append({"event": "unpublished", "version": previous, "when": time.time(),
                                 "who": who or getpass.getuser(), "why": why})
        self.store.put_json(self._key(adapter), state)

    def record_rejection(self, adapter: str, version: str, why: str, who: str | None = None
                         ) -> None:
        state = self.read(adapter)
        state["history"].append({"event": "rejected", "version": version, "when": time.time(),
                                 "who": who or getpass.getuser(), "why": why})
        self.store.put_json(self._key(adapter), state)


def promotion_asset(evaluation: str, adapter: str, config: FactoryConfig
                    ) -> dg.AssetsDefinition:
    """`promotion/<adapter>`: the registry entry, written only once the evaluation's blocking
    gate has passed (and checked again here, since a blocking check binds within one run)."""

    @dg.asset(
        key=["promotion", adapter], group_name="evaluation", kinds={"registry"},
        deps=[dg.AssetKey(["evaluation", evaluation])],
        description=f"Records '{adapter}' as champion once its gate passes; runs only then.",
    )
    def _promotion(context: dg.AssetExecutionContext, store: ObjectStore) -> dg.MaterializeResult:
        ref = current(store, "evaluation", evaluation)
        if not ref["gate_passed"]:  # the blocking check stops this in one run; be safe across runs
            raise dg.Failure(f"gate did not pass for {adapter}: {ref['gate']}")
        registry = Registry(store)
        champion = registry.champion(adapter)
        if champion and champion["version"] == ref["candidate_version"]:
            entry, action = champion, "unchanged"
        else:
            entry = registry.promote(adapter, ref["candidate_version"],
                                     ref["candidate_prefix"], why=ref["gate"],
                                     scores=ref["scores"]["candidate"],
                                     who=context.run.tags.get("dagster/user"))
            action = "promoted"
        card = write_card(store, config, adapter, config.adapters[adapter],
                          registry.read(adapter))
        return dg.MaterializeResult(
            metadata={"action": action, "champion": entry["version"], "who": entry["who"],
                      "why": entry["why"], "previous": entry.get("previous") or "none",
                      "model_card": dg.MetadataValue.md(card)},
            data_version=dg.DataVersion(entry["version"]),
        )

    return _promotion
