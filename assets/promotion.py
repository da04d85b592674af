"""The `promotion/<adapter>` asset: writes the registry (store/registry.py) once the evaluation's
gate (evaluation/gate.py) has passed. Promotion is an explicit, recorded event (who, when, why);
the deployment serves what the registry says, so a failed gate leaves the champion serving.
"""


import dagster as dg

from assets.common import current
from config.schema import FactoryConfig
from models.cards import write_card
from resources.object_store import ObjectStore
from store.registry import Registry


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
