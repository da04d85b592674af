"""Evaluation reports: lm-evaluation-harness scores base vs adapter on the held-out test split."""


import json
import shutil
import time
from typing import Any

import dagster as dg

from assets.common import Definition, current, png_markdown, publish, store_link, version_of
from assets.demo_data.math_problems import SYSTEM_PROMPT
from pipelines.config import EvaluationSpec, FactoryConfig
from resources.compute import WorkerCompute
from resources.object_store import ObjectStore


def render_markdown(name: str, lineage: dict[str, str], results: dict[str, Any]) -> str:
    base, adapter = results["base"]["exact_match"], results["adapter"]["exact_match"]
    lines = [
        f"# Evaluation `{name}`", "",
        *[f"- {k}: `{v}`" for k, v in lineage.items()], "",
        "| model | exact match | seconds |", "|---|---|---|",
        *[f"| {m} | {r['exact_match']:.3f} | {r['seconds']} |" for m, r in results.items()],
        "", f"**Delta (adapter - base): {adapter - base:+.3f}**", "",
        "## Adapter failures (first 10)", "",
    ]
    failures = [s for s in results["adapter"]["samples"] if not s["correct"]][:10]
    for s in failures:
        lines += [f"- Q: {s['question']}", f"  - expected `{s['target']}`, got "
                  f"`{s['extracted']}`: {s['output'][:200]!r}"]
    return "\n".join(lines) + "\n"


def score_chart(results: dict[str, Any], title: str) -> dg.MetadataValue:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 3))
    names = list(results)
    ax.bar(names, [results[n]["exact_match"] for n in names], color=["#999", "#2a7"])
    ax.set_ylim(0, 1)
    ax.set_ylabel("exact match")
    ax.set_title(title)
    return png_markdown(fig, title)


def evaluation_asset(name: str, spec: EvaluationSpec, config: FactoryConfig) -> list[Definition]:
    adapter_spec = config.adapters[spec.adapter]

    @dg.asset(
        key=["evaluation", name], group_name="evaluation", kinds={"lm_eval"},
        deps=[dg.AssetKey(["adapter", spec.adapter])],
        description=f"Base vs '{spec.adapter}' on the test split of '{adapter_spec.dataset}'.",
    )
    def _evaluation(context: dg.AssetExecutionContext, store: ObjectStore,
                    worker: WorkerCompute) -> dg.MaterializeResult:
        started = time.monotonic()
        base = current(store, "base_model", adapter_spec.base_model)
        data = current(store, "dataset", adapter_spec.dataset)
        adapter = current(store, "adapter", spec.adapter)
        lineage = {"adapter": f"{spec.adapter}@{adapter['version']}",
                   "base_model": f"{adapter_spec.base_model}@{base['version']}",
                   "dataset": f"{adapter_spec.dataset}@{data['version']}"}
        version = version_of(lineage, spec.model_dump())
        run_dir = config.work_dir / "runs" / "evaluation" / name / version
        shutil.rmtree(run_dir, ignore_errors=True)
        run_dir.mkdir(parents=True)
        worker.run(context, "evaluate", {
            "output_dir": str(run_dir),
            "base_model_dir": str(store.local_dir(base["prefix"])),
            "adapter_dir": str(store.local_dir(adapter["prefix"])),
            "test_path": str(store.local_dir(data["prefix"]) / "test.jsonl"),
            "limit": spec.limit, "max_new_tokens": spec.max_new_tokens,
            "batch_size": spec.batch_size, "system_prompt": SYSTEM_PROMPT,
        })
        results = json.loads((run_dir / "results.json").read_text())
        report_dir = run_dir / "report"
        report_dir.mkdir()
        (report_dir / "report.json").write_text(json.dumps({**lineage, "results": results},
                                                           indent=1))
        markdown = render_markdown(name, lineage, results)
        (report_dir / "report.md").write_text(markdown)
        scores = {m: r["exact_match"] for m, r in results.items()}
        ref = publish(store, "evaluation", name, version, report_dir, scores=scores, **lineage)
        return dg.MaterializeResult(
            metadata={
                "base_exact_match": scores["base"],
                "adapter_exact_match": scores["adapter"],
                "delta": scores["adapter"] - scores["base"],
                "samples": len(results["adapter"]["samples"]),
                "scores": score_chart(results, name),
                "report": dg.MetadataValue.md(markdown),
                "location": store_link(store, ref["prefix"]),
                "seconds": round(time.monotonic() - started, 1),
                **lineage,
            },
            data_version=dg.DataVersion(version),
        )

    @dg.asset_check(name="adapter_not_worse", asset=_evaluation,
                    description="The adapter scores at least as well as the base model.")
    def _adapter_not_worse(store: ObjectStore) -> dg.AssetCheckResult:
        scores = current(store, "evaluation", name)["scores"]
        return dg.AssetCheckResult(
            passed=scores["adapter"] >= scores["base"],
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"base": scores["base"], "adapter": scores["adapter"]},
        )

    return [_evaluation, _adapter_not_worse]
