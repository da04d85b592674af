"""Evaluation and promotion: base vs candidate adapter vs current champion, then the gate.

lm-evaluation-harness scores tasks generated from the dataset's test split: each row's own
conversation is the prompt, the reply is scored by exact match (on what `answer_pattern`
extracts, or the whole reply), ROUGE-L and BLEU, optionally multiple choice; our own metrics
(validation perplexity, seconds per sample) ride along.
The `promotion_gate` check is blocking, so `promotion/<adapter>` only runs when the candidate
earns it; the deployment serves the registry's champion, never simply the newest adapter.
"""

import json
import shutil
import time
from typing import Any

import dagster as dg

from assets.common import (
    WITH_ITS_ASSET,
    Definition,
    current,
    png_markdown,
    publish,
    store_link,
    version_of,
)
from assets.promotion import promotion_asset
from config.evaluations import EvaluationSpec, GuardSpec, PromotionSpec
from config.metrics import METRICS
from config.schema import FactoryConfig
from evaluation.gate import GateVerdict, gate
from evaluation.judging import judge_score, safety_rate
from models.cards import write_card
from resources.compute import WorkerCompute
from resources.object_store import ObjectStore
from store.keys import artifact_prefix
from store.registry import Registry


def grade(spec: EvaluationSpec, results: dict[str, Any], log: Any) -> None:
    """Add the judge's score and the safety probe's pass rate to each model's results."""
    if spec.judge is None:
        return
    for model, result in results.items():
        samples = [{"question": s["question"], "target": s["target"], "output": s["output"]}
                   for s in result["samples"]]
        result |= judge_score(spec.judge, samples)
        if spec.safety:
            result |= safety_rate(spec.judge, spec.safety.prompts, result["safety_responses"])
        log.info(f"{model}: judge {result['judge_parsed']}/{result['judge_asked']} parsed, "
                 f"score {result['judge_score']}; safety {result.get('safety_pass_rate')}")


def policy_for(spec: EvaluationSpec) -> PromotionSpec:
    """The safety probe, when configured, is one more guard of the gate."""
    if spec.safety is None:
        return spec.promotion
    guards = {**spec.promotion.guards, "safety_pass_rate": GuardSpec(
        tolerance=spec.safety.tolerance)}
    return spec.promotion.model_copy(update={"guards": guards})


def scores_of(results: dict[str, Any]) -> dict[str, dict[str, float]]:
    return {m: {k: r[k] for k in METRICS if r.get(k) is not None} for m, r in results.items()}


def render_markdown(name: str, lineage: dict[str, str], results: dict[str, Any],
                    decision: GateVerdict) -> str:
    columns = [c for c, metric in METRICS.items()
               if metric.in_table and c in results["candidate"]]
    lines = [
        f"# Evaluation `{name}`", "",
        *[f"- {k}: `{v}`" for k, v in lineage.items()], "",
        "| model | " + " | ".join(METRICS[c].label for c in columns) + " |",
        "|---|" + "---|" * len(columns),
        *[f"| {m} | " + " | ".join(f"{r[c]:.3f}" for c in columns) + " |"
          for m, r in results.items()],
        "", f"**Gate: {decision.summary}**", "",
        "## The candidate's weakest replies (misses first, then by ROUGE-L; up to 10)", "",
    ]
    weakest = sorted(results["candidate"]["samples"], key=lambda s: (s["correct"], s["rougeL"]))
    for s in weakest[:10]:
        lines += [f"- Q: {s['question'][:300]!r}", f"  - expected `{s['target'][:200]}`, got "
                  f"`{s['extracted'][:200]}` (ROUGE-L {s['rougeL']:.2f})"]
    return "\n".join(lines) + "\n"


def score_chart(results: dict[str, Any], metric: str, title: str) -> dg.MetadataValue:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 3))
    names = list(results)
    colours = {"base": "#999", "candidate": "#2a7", "champion": "#37c"}
    ax.bar(names, [results[n].get(metric) or 0.0 for n in names],
           color=[colours[n] for n in names])
    if METRICS[metric].higher_is_better and metric != "bleu":
        ax.set_ylim(0, 1)
    ax.set_ylabel(METRICS[metric].label)
    ax.set_title(title)
    return png_markdown(fig, title)


def rival(store: ObjectStore, adapter: str, candidate: dict[str, Any]
          ) -> tuple[dict[str, Any] | None, str]:
    """The champion a candidate must beat, and whose it is: its own; for a GRPO adapter with
    none yet, the very champion version it started from (its lineage's `started_from`): RL must
    beat the SFT it began with, on the same held-out rows, before it is served."""
    own = Registry(store).champion(adapter)
    started = candidate.get("started_from")
    if own is not None or not started:
        return own, adapter
    start, _, version = started.partition("@")
    return {"version": version, "prefix": artifact_prefix("adapter", start, version)}, start


def evaluation_asset(name: str, spec: EvaluationSpec, config: FactoryConfig) -> list[Definition]:
    adapter_spec = config.adapters[spec.adapter]
    key = dg.AssetKey(["evaluation", name])

    @dg.asset(
        key=key, group_name="evaluation", kinds={"lm_eval"},
        deps=[dg.AssetKey(["adapter", spec.adapter])],
        description=f"Base vs candidate '{spec.adapter}' vs its champion on the test split of "
                    f"'{adapter_spec.dataset}', and the promotion decision.",
    )
    def _evaluation(context: dg.AssetExecutionContext, store: ObjectStore,
                    worker: WorkerCompute) -> dg.MaterializeResult:
        started = time.monotonic()
        base = current(store, "base_model", adapter_spec.base_model)
        data = current(store, "dataset", adapter_spec.dataset)
        candidate = current(store, "adapter", spec.adapter)
        champion, champion_of = rival(store, spec.adapter, candidate)
        base_dir = str(store.local_dir(base["prefix"]))
        def trained(prefix: str) -> dict[str, str]:
            folder = str(store.local_dir(prefix))
            if adapter_spec.method == "full":
                return {"pretrained": folder}
            return {"pretrained": base_dir, "peft": folder}

        models = {"base": {"pretrained": base_dir}, "candidate": trained(candidate["prefix"])}
        if champion and champion["version"] != candidate["version"]:
            models["champion"] = trained(champion["prefix"])
        lineage = {"candidate": f"{spec.adapter}@{candidate['version']}",
                   "champion": f"{champion_of}@{champion['version']}" if champion else "none",
                   "base_model": f"{adapter_spec.base_model}@{base['version']}",
                   "dataset": f"{adapter_spec.dataset}@{data['version']}"}
        version = version_of(lineage, spec.model_dump())
        run_dir = config.work_dir / "runs" / "evaluation" / name / version
        shutil.rmtree(run_dir, ignore_errors=True)
        run_dir.mkdir(parents=True)
        data_dir = store.local_dir(data["prefix"])
        worker.run(context, "evaluate", {
            "output_dir": str(run_dir), "models": models,
            "test_path": str(data_dir / "test.jsonl"), "val_path": str(data_dir / "val.jsonl"),
            "perplexity_rows": spec.perplexity_rows, "limit": spec.limit,
            "max_new_tokens": spec.max_new_tokens, "batch_size": spec.batch_size,
            "answer_pattern": spec.answer_pattern, "harness_tasks": spec.harness_tasks,
            "local_tasks": spec.local_tasks, "mc_choices": spec.mc_choices,
            "safety_prompts": spec.safety.prompts if spec.safety else [],
        })
        results = json.loads((run_dir / "results.json").read_text())
        grade(spec, results, context.log)
        scores = scores_of(results)
        is_champion = bool(champion and champion_of == spec.adapter
                           and champion["version"] == candidate["version"])
        decision = gate(scores, policy_for(spec), candidate_is_champion=is_champion)
        context.log.info(decision.summary)
        if not decision.passed:
            Registry(store).record_rejection(spec.adapter, candidate["version"], decision.summary,
                                             who=context.run.tags.get("dagster/user"))
        report_dir = run_dir / "report"
        report_dir.mkdir()
        markdown = render_markdown(name, lineage, results, decision)
        (report_dir / "report.md").write_text(markdown)
        (report_dir / "report.json").write_text(json.dumps({
            **lineage, "candidate_version": candidate["version"],
            "decision": {"passed": decision.passed, "reference": decision.reference,
                         "reasons": decision.reasons},
            "results": results}, indent=1))
        ref = publish(store, "evaluation", name, version, report_dir, scores=scores,
                      gate_passed=decision.passed, gate=decision.summary,
                      candidate_version=candidate["version"], candidate_prefix=candidate["prefix"])
        card = write_card(store, config, spec.adapter, adapter_spec,
                          Registry(store).read(spec.adapter))
        reference = scores[decision.reference]
        primary = spec.promotion.primary
        return dg.MaterializeResult(
            metadata={
                **{f"{m}_{k}": v for m, s in scores.items() for k, v in s.items()},
                "primary_metric": primary,
                f"{primary}_delta_vs_{decision.reference}":
                    scores["candidate"].get(primary, float("nan"))
                    - reference.get(primary, float("nan")),
                "gate": decision.summary,
                "samples": len(results["candidate"]["samples"]),
                "scores": score_chart(results, primary, f"{name}: {METRICS[primary].label}"),
                "report": dg.MetadataValue.md(markdown),
                "model_card": dg.MetadataValue.md(card),
                "location": store_link(store, ref["prefix"]),
                "seconds": round(time.monotonic() - started, 1),
                **lineage,
            },
            data_version=dg.DataVersion(version),
        )

    @dg.asset_check(name="promotion_gate", asset=key, blocking=True,
                    description="The candidate beats the champion (or base) by the margin and "
                                "regresses no guard metric beyond its tolerance.",
                    automation_condition=WITH_ITS_ASSET)
    def _gate(store: ObjectStore) -> dg.AssetCheckResult:
        ref = current(store, "evaluation", name)
        return dg.AssetCheckResult(passed=ref["gate_passed"], description=ref["gate"],
                                   metadata={"scores": ref["scores"]})

    return [_evaluation, _gate, promotion_asset(name, spec.adapter, config)]
