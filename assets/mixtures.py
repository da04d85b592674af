"""Adapter mixtures: the promoted versions of several adapters merged with weights into one LoRA.

Rebuilt whenever a component's champion changes (the version hashes the champions, weights and
combination), and served by a deployment like any adapter, so a "mixture of adapters" is just a
model name to API clients.
"""

import json
import time

import dagster as dg

from assets.common import Definition, current, publish, reuse_if_complete, store_link, version_of
from assets.promotion import Registry
from config.schema import FactoryConfig, MixtureSpec
from resources.compute import WorkerCompute
from resources.object_store import ObjectStore


def mixture_asset(name: str, spec: MixtureSpec, config: FactoryConfig) -> list[Definition]:
    @dg.asset(
        key=["mixture", name], group_name="serving", kinds={"peft"},
        deps=[dg.AssetKey(["promotion", a]) for a in spec.adapters],
        description=f"Weighted mixture {spec.adapters} ({spec.combination}) as one LoRA.",
    )
    def _mixture(context: dg.AssetExecutionContext, store: ObjectStore,
                 worker: WorkerCompute) -> dg.MaterializeResult:
        started = time.monotonic()
        registry = Registry(store)
        champions = {}
        for adapter in spec.adapters:
            champion = registry.champion(adapter)
            if champion is None:
                raise dg.Failure(f"{adapter} has no promoted version; a mixture is built from "
                                 "champions only")
            champions[adapter] = champion
        base = current(store, "base_model", spec.base_model)
        lineage = {a: c["version"] for a, c in champions.items()}
        version = version_of(base["version"], lineage, spec.model_dump())
        ref = reuse_if_complete(store, "mixture", name, version, components=lineage)
        if ref is None:
            run_dir = config.work_dir / "runs" / "mixture" / name / version
            worker.run(context, "mix", {
                "output_dir": str(run_dir),
                "base_model_dir": str(store.local_dir(base["prefix"])),
                "adapters": [[a, str(store.local_dir(champions[a]["prefix"])), w]
                             for a, w in spec.adapters.items()],
                "combination": spec.combination,
            })
            ref = publish(store, "mixture", name, version, run_dir / "final", components=lineage)
        adapter_config = json.loads(
            (store.local_dir(ref["prefix"]) / "adapter_config.json").read_text())
        return dg.MaterializeResult(
            metadata={"version": version, "components": lineage, "weights": spec.adapters,
                      "rank": adapter_config["r"], "combination": spec.combination,
                      "location": store_link(store, ref["prefix"]),
                      "seconds": round(time.monotonic() - started, 1)},
            data_version=dg.DataVersion(version),
        )

    return [_mixture]
