"""Hyper-parameter sweeps: every combination of a recipe's `sweep:` values trains as its own
adapter (a trial), and the trial with the lowest eval loss on the val split becomes the adapter
the rest of the graph evaluates, promotes and serves.

Trials are ordinary adapter assets (versioned by their inputs, reused when unchanged, checked),
so re-running a sweep after adding one value trains only the new combination. The selection
points `adapter/<name>` at the winner's stored artifact; nothing is copied.
"""

import math

import dagster as dg

from assets.adapters import adapter_asset, peft_format_check
from assets.common import Definition, alias, current, png_markdown
from config.adapters import AdapterSpec, trial_names
from config.schema import FactoryConfig
from models.cards import write_card
from resources.object_store import ObjectStore
from store.registry import Registry


def sweep_assets(name: str, spec: AdapterSpec, config: FactoryConfig) -> list[Definition]:
    trials = list(zip(trial_names(name, spec), spec.trials(), strict=True))
    defs: list[Definition] = [d for trial, (_, recipe) in trials
                              for d in adapter_asset(trial, recipe, config)]

    @dg.asset(
        key=["adapter", name], group_name="training", kinds={"axolotl", "peft"},
        deps=[dg.AssetKey(["adapter", trial]) for trial, _ in trials],
        description=f"Sweep '{name}': the best of {len(trials)} trials by eval loss "
                    f"({', '.join(spec.sweep)}).",
    )
    def _sweep(context: dg.AssetExecutionContext, store: ObjectStore) -> dg.MaterializeResult:
        rows = []
        for trial, (values, _) in trials:
            ref = current(store, "adapter", trial)
            loss = store.manifest(ref["prefix"]).get("eval_loss")
            if loss is None or math.isnan(loss):
                raise dg.Failure(
                    f"trial {trial} has no eval loss to rank by: datasets.{spec.dataset} needs "
                    f"a non-empty val split (datasets.{spec.dataset}.split.val > 0)")
            rows.append({"trial": trial, **values, "eval_loss": loss, "ref": ref})
        best = min(rows, key=lambda r: r["eval_loss"])
        ref = alias(store, "adapter", name, best["ref"], sweep_trial=best["trial"],
                    sweep_values={k: best[k] for k in spec.sweep})
        card = write_card(store, config, name, spec, Registry(store).read(name))
        context.log.info(f"sweep {name}: {best['trial']} wins with eval loss "
                         f"{best['eval_loss']:.4f} ({len(rows)} trials)")
        header = ["trial", *spec.sweep, "eval_loss", "best"]
        table = "\n".join([
            "| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join([r["trial"], *(str(r[k]) for k in spec.sweep),
                                 f"{r['eval_loss']:.4f}", "✓" if r is best else ""]) + " |"
              for r in rows)])
        return dg.MaterializeResult(
            metadata={"best_trial": best["trial"], "best_eval_loss": best["eval_loss"],
                      "trials": dg.MetadataValue.md(table), "version": ref["version"],
                      "eval_loss_by_trial": _plot(name, rows),
                      "model_card": dg.MetadataValue.md(card)},
            data_version=dg.DataVersion(ref["version"]),
        )

    return [*defs, _sweep, peft_format_check(name, spec, _sweep)]


def _plot(name: str, rows: list[dict]) -> dg.MetadataValue:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3))
    losses = [r["eval_loss"] for r in rows]
    best = losses.index(min(losses))
    ax.bar([r["trial"].rsplit("-", 1)[-1] for r in rows], losses,
           color=["tab:green" if i == best else "tab:gray" for i in range(len(rows))])
    ax.set_ylabel("eval loss (val split)")
    ax.set_title(f"sweep {name}")
    return png_markdown(fig, f"sweep {name}")
