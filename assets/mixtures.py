"""Adapter mixtures: the promoted versions of several adapters merged with weights into one LoRA.

Rebuilt whenever a component's champion changes (the version hashes the champions, weights and
combination), and served by a deployment like any adapter, so a "mixture of adapters" is just a
model name to API clients. With `search`, the weights are chosen on the components' val splits
(worker/mix.py); every trial is recorded, and the metadata says whether the mixture beats its
best single member.
"""

import json
import time
from typing import Any

import dagster as dg

from assets.common import Definition, current, publish, reuse_if_complete, store_link, version_of
from config.mixtures import MixtureSpec
from config.schema import FactoryConfig
from resources.compute import WorkerCompute
from resources.object_store import ObjectStore
from store.registry import Registry


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
        built_on = f"{spec.base_model}@{base['version']}"  # what its replicas must serve
        ref = reuse_if_complete(store, "mixture", name, version, components=lineage,
                                base_model=built_on)
        if ref is None:
            run_dir = config.work_dir / "runs" / "mixture" / name / version
            (report,) = worker.run(context, "mix", {
                "output_dir": str(run_dir),
                "base_model_dir": str(store.local_dir(base["prefix"])),
                "adapters": [[a, str(store.local_dir(champions[a]["prefix"])), w]
                             for a, w in spec.adapters.items()],
                "combination": spec.combination, **search_params(store, spec, config),
            })
            ref = publish(store, "mixture", name, version, run_dir / "final", components=lineage,
                          base_model=built_on, weights=report["weights"],
                          trials=report["trials"])
        adapter_config = json.loads(
            (store.local_dir(ref["prefix"]) / "adapter_config.json").read_text())
        built = store.manifest(ref["prefix"])  # what the search chose, also when reused
        return dg.MaterializeResult(
            metadata={"version": version, "components": lineage,
                      "weights": built.get("weights", spec.adapters),
                      **search_metadata(built.get("trials") or []),
                      "rank": adapter_config["r"], "combination": spec.combination,
                      "location": store_link(store, ref["prefix"]),
                      "seconds": round(time.monotonic() - started, 1)},
            data_version=dg.DataVersion(version),
        )

    return [_mixture]


def search_params(store: ObjectStore, spec: MixtureSpec, config: FactoryConfig
                  ) -> dict[str, Any]:
    """What the worker needs to search: the grid, and each component dataset's val split."""
    if spec.search is None:
        return {}
    datasets = list(dict.fromkeys(config.adapters[a].dataset for a in spec.adapters))
    text = [d for d in datasets if config.datasets[d].kind == "pretrain"]
    if text:
        raise dg.Failure(f"mixture search scores replies, but {', '.join(text)} is pretraining "
                         "text; remove `search` or mix chat/preference adapters")
    return {"search": [list(w) for w in spec.search.grid(len(spec.adapters))],
            "val_rows": spec.search.rows,
            "val_paths": [str(store.local_dir(current(store, "dataset", d)["prefix"])
                              / "val.jsonl") for d in datasets]}


def search_metadata(trials: list[dict[str, Any]]) -> dict[str, Any]:
    """Every trial as a table, and whether the mixture beats its best single member."""
    if not trials:
        return {}
    best = min(trials, key=lambda t: t["val_loss"])
    singles = [t for t in trials if sorted(t["weights"].values())[-1] == 1.0]
    single = min(singles, key=lambda t: t["val_loss"]) if singles else None
    rows = ["| weights | val loss |", "|---|---|"] + [
        f"| {', '.join(f'{a} {w:g}' for a, w in t['weights'].items())} | {t['val_loss']:.4f} |"
        for t in sorted(trials, key=lambda t: t["val_loss"])]
    meta: dict[str, Any] = {"trials": len(trials), "val_loss": best["val_loss"],
                            "weight_search": dg.MetadataValue.md("\n".join(rows))}
    if single:
        meta |= {"best_single_member": max(single["weights"], key=single["weights"].get),
                 "best_single_val_loss": single["val_loss"],
                 "beats_best_single_member": best["val_loss"] < single["val_loss"]}
    return meta
