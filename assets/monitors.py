"""Monitor assets (issue #44): `monitor/<deployment>` reads what the gateway measured of the
deployment's models (its admin API, never its database) over the lookback, window by window,
and judges it with four checks: error rate, latency p99, the mean of people's ratings, and the
drift of recent kept prompts from the prompts each served adapter learnt from. A check that
starts failing sends one alert to the platform's webhooks, and one more when it passes again
(monitoring/alerts.py; the open incidents are kept in the object store). The series are also
written to the store, where the Studio's Monitor page reads its project's.

It runs on its deployment's `monitor.schedule` (a cron term of its automation condition) and
whenever the deployment changes; like gateway/usage, it needs a running gateway, so the
`everything` job leaves it out.
"""


import json
import random
import time
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np

from assets.common import Definition, current, png_markdown
from config.deployments import DeploymentSpec
from config.monitoring import DriftSpec, MonitorSpec, Thresholds
from config.schema import FactoryConfig
from curation.pii import scrub
from monitoring.alerts import Finding, incidents_after, send
from monitoring.drift import Drift, energy_test
from resources.gateway_admin import GatewayAdmin
from resources.object_store import ObjectStore

CHECKS = {
    "error_rate": "Errors per answered request over the lookback stay under the threshold.",
    "latency_p99": "No window's p99 latency passes the threshold.",
    "feedback_score": "The mean of people's ratings stays above the threshold (once there are "
                      "enough of them).",
    "drift": "Recent kept prompts are not significantly unlike each served adapter's training "
             "prompts (energy-distance permutation test).",
}


def monitor_key(deployment: str) -> dg.AssetKey:
    return dg.AssetKey(["monitor", deployment])


def monitored(config: FactoryConfig) -> dict[str, MonitorSpec]:
    return {name: spec.monitor for name, spec in config.deployments.items() if spec.monitor}


def totals(read: dict[str, Any]) -> dict[str, Any]:
    """The lookback's totals over every served model's windows."""
    windows = [w for series in read["models"].values() for w in series]
    answered = sum(w["answered"] for w in windows)
    errors = sum(sum(w["errors"].values()) for w in windows)
    scored = sum(w["scored"] for w in windows)
    worst = max((w["latency_ms"]["p99"] for w in windows if w["latency_ms"]), default=None)
    mean = (sum(w["mean_score"] * w["scored"] for w in windows if w["scored"]) / scored
            if scored else None)
    return {"requests": sum(w["requests"] for w in windows), "answered": answered,
            "errors": errors, "error_rate": errors / answered if answered else None,
            "worst_p99_ms": worst, "ratings": scored, "mean_score": mean,
            "refused": sum(sum(w["refused"].values()) for w in windows)}


def threshold_findings(total: dict[str, Any], limits: Thresholds) -> list[Finding]:
    rate, worst, mean = total["error_rate"], total["worst_p99_ms"], total["mean_score"]
    enough = total["ratings"] >= limits.min_feedback
    return [
        Finding("error_rate", rate is None or rate <= limits.error_rate,
                "no answered request" if rate is None else
                f"{total['errors']} errors in {total['answered']} answered requests "
                f"({rate:.1%}; threshold {limits.error_rate:.1%})"),
        Finding("latency_p99", worst is None or worst <= limits.latency_p99_ms,
                "no answered request" if worst is None else
                f"worst window p99 {worst:.0f} ms (threshold {limits.latency_p99_ms:.0f} ms)"),
        Finding("feedback_score", not enough or mean >= limits.min_feedback_score,
                f"{total['ratings']} ratings, fewer than {limits.min_feedback}: not judged"
                if not enough else f"mean rating {mean:.2f} of {total['ratings']} "
                                   f"(threshold {limits.min_feedback_score:.2f})"),
    ]


def training_prompts(store: ObjectStore, config: FactoryConfig, adapter: str,
                     split: str = "train") -> list[str]:
    """The last user turn of each row of a split of the adapter's dataset as stored now."""
    dataset = config.adapters[adapter].dataset
    folder = store.local_dir(current(store, "dataset", dataset)["prefix"])
    prompts = []
    for line in Path(folder, f"{split}.jsonl").read_text().splitlines():
        users = [m["content"] for m in json.loads(line).get("messages", ())
                 if m["role"] == "user"]
        if users:
            prompts.append(users[-1])
    return prompts


def drift_of(recent: list[str], reference: list[str], spec: DriftSpec,
             embed: Any) -> Drift:
    rng = random.Random(spec.seed)
    recent = rng.sample(recent, min(spec.sample, len(recent)))
    reference = rng.sample(reference, min(spec.sample, len(reference)))
    vectors = np.asarray(embed(recent + reference), dtype=np.float64)
    return energy_test(vectors[:len(recent)], vectors[len(recent):], spec.resamples,
                       spec.seed, spec.shown)


def monitor_asset(name: str, spec: DeploymentSpec, config: FactoryConfig) -> list[Definition]:
    monitor = spec.monitor
    if monitor is None:
        return []
    key = monitor_key(name)
    served = [spec.base_model, *spec.adapters]
    learnt = [a for a in spec.adapters if a in config.adapters]

    @dg.asset(
        key=key, group_name="serving", kinds={"prometheus"},
        deps=[dg.AssetKey(["deployment", name])],
        check_specs=[dg.AssetCheckSpec(check, asset=key, description=text)
                     for check, text in CHECKS.items()],
        description=f"What deployment '{name}' served over the last {monitor.lookback_hours} h, "
                    f"per {monitor.window_s} s window, from the gateway; checked, alerting.")
    def _monitor(context: dg.AssetExecutionContext, store: ObjectStore
                 ) -> dg.MaterializeResult:
        admin = GatewayAdmin(config.gateway_settings)
        until = time.time()
        since = until - monitor.lookback_hours * 3600
        read = admin.monitor(since, until, monitor.window_s, served)
        total = totals(read)
        findings = threshold_findings(total, monitor.thresholds)
        drifts: dict[str, dict[str, Any]] = {}
        if monitor.drift is not None:
            drifts = adapters_drift(context, store, admin, monitor.drift, since)
            drifted = {a: d for a, d in drifts.items() if d.get("drifted")}
            judged = {a: d for a, d in drifts.items() if "p_value" in d}
            findings.append(Finding(
                "drift", not drifted,
                "; ".join(f"{a}: p {d['p_value']:.4f} < {monitor.drift.p_value} over "
                          f"{d['recent_prompts']} prompts" for a, d in drifted.items())
                if drifted else "; ".join(f"{a}: p {d['p_value']:.4f}" for a, d in
                                          judged.items()) or "not enough kept prompts to test"))
        else:
            findings.append(Finding("drift", True, "drift is not watched"))
        opened_key = f"monitor/{name}/incidents.json"
        opened = store.get_json(opened_key) if store.exists(opened_key) else {}
        still, messages = incidents_after(opened, findings, name, until)
        problems = send(config.alerts.webhooks, messages)
        store.put_json(opened_key, still)
        store.put_json(f"monitor/{name}/latest.json", {
            "deployment": name, "read": read, "totals": total, "drift": drifts,
            "findings": [f.__dict__ for f in findings], "as_of": until})
        for message in messages:
            context.log.warning(f"alert {message['state']}: {message['check']}: "
                                f"{message['summary']}")
        for problem in problems:
            context.log.error(f"an alert was not delivered: {problem}")
        return dg.MaterializeResult(
            metadata=monitor_metadata(read, total, drifts, messages, problems, name),
            check_results=[dg.AssetCheckResult(
                check_name=f.check, passed=f.passed, description=f.summary,
                severity=dg.AssetCheckSeverity.ERROR,
                metadata={"adapters": dg.MetadataValue.json(drifts)} if f.check == "drift"
                else {})
                for f in findings])

    def adapters_drift(context: dg.AssetExecutionContext, store: ObjectStore,
                       admin: GatewayAdmin, drift: DriftSpec, since: float
                       ) -> dict[str, dict[str, Any]]:
        from resources.embeddings import llama_index_embedding

        model = None
        found: dict[str, dict[str, Any]] = {}
        for adapter in learnt:
            recent = admin.monitor_prompts([adapter], since, drift.sample * 5)
            if len(recent) < drift.min_prompts:
                found[adapter] = {"recent_prompts": len(recent),
                                  "skipped": f"fewer than {drift.min_prompts} kept prompts"}
                continue
            model = model or llama_index_embedding(config.gateway_settings.embedding_model)
            result = drift_of(recent, training_prompts(store, config, adapter), drift,
                              model.get_text_embedding_batch)
            shown = [scrub(recent[i])[0][:200] for i in result.drifted]
            found[adapter] = {**result.as_metadata(), "drifted": result.p_value < drift.p_value,
                              "most_drifted": shown}
            context.log.info(f"drift of {adapter}: {result.as_metadata()}")
        return found

    return [_monitor]


def monitor_metadata(read: dict[str, Any], total: dict[str, Any],
                     drifts: dict[str, dict[str, Any]], messages: list[dict[str, Any]],
                     problems: list[str], name: str) -> dict[str, Any]:
    rows = ["| model | window start (UTC) | requests | errors | p50 ms | p99 ms | TTFT p50 ms "
            "| ratings | mean rating |", "|---|---|---|---|---|---|---|---|---|"]
    for model, windows in sorted(read["models"].items()):
        for w in windows[-24:]:
            latency, ttft = w["latency_ms"] or {}, w["ttft_ms"] or {}
            rows.append(f"| {model} | {time.strftime('%m-%d %H:%M', time.gmtime(w['start']))} "
                        f"| {w['requests']} | {sum(w['errors'].values())} | "
                        f"{latency.get('p50', '')} | {latency.get('p99', '')} | "
                        f"{ttft.get('p50', '')} | {w['scored']} | {w['mean_score'] or ''} |")
    meta: dict[str, Any] = {
        **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in total.items()
           if v is not None},
        "models": sorted(read["models"]),
        "windows": dg.MetadataValue.md("\n".join(rows)),
        "drift": dg.MetadataValue.json(drifts),
        "alerts_sent": [f"{m['state']}: {m['check']}" for m in messages],
        "alerts_undelivered": problems,
        "rows_read": read["rows_read"],
    }
    if read["models"]:
        meta["series"] = series_plot(read, name)
    return meta


def series_plot(read: dict[str, Any], name: str) -> dg.MetadataValue:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3))
    for model, windows in sorted(read["models"].items()):
        hours = [(w["start"] - read["until"]) / 3600 for w in windows]
        axes[0].plot(hours, [w["requests"] for w in windows], marker=".", label=model)
        axes[1].plot(hours, [(w["latency_ms"] or {}).get("p99") for w in windows], marker=".")
        axes[2].plot(hours, [w["error_rate"] for w in windows], marker=".")
    for ax, title in zip(axes, ("requests", "p99 latency (ms)", "error rate"), strict=True):
        ax.set_title(title)
        ax.set_xlabel("hours before now")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return png_markdown(fig, f"{name}: what was served")


# -- what a failed check sets in motion --------------------------------------------------------
FOLLOWS = {"reevaluate": "the served evaluation",
           "retrain": "the datasets of its adapters, then retraining"}


def trigger_key(deployment: str) -> dg.AssetKey:
    return dg.AssetKey(["trigger", "deployment", deployment])


def triggered(config: FactoryConfig) -> dict[str, str]:
    """Deployments whose failing monitor re-evaluates or retrains: deployment -> what."""
    return {name: monitor.on_failure for name, monitor in monitored(config).items()
            if monitor.on_failure != "alert"}


def retrain_triggers(config: FactoryConfig, dataset: str) -> list[dg.AssetKey]:
    """The triggers that rebuild `dataset`: those of the deployments serving an adapter
    trained on it whose monitor retrains."""
    return [trigger_key(d) for d, what in triggered(config).items() if what == "retrain"
            and any(config.adapters[a].dataset == dataset
                    for a in config.deployments[d].adapters if a in config.adapters)]


def reevaluate_triggers(config: FactoryConfig, deployment: str) -> list[dg.AssetKey]:
    return [trigger_key(deployment)] if triggered(config).get(deployment) == "reevaluate" \
        else []


def trigger_asset(deployment: str, what: str) -> dg.SourceAsset:
    """Observed by the monitor's trigger sensor when a check starts failing; "Observe" in the
    UI sets the same in motion by hand."""
    import warnings

    with warnings.catch_warnings():  # observable source assets are "beta" in Dagster 1.13
        warnings.simplefilter("ignore", dg.BetaWarning)

        @dg.observable_source_asset(
            key=trigger_key(deployment), group_name="serving",
            description=f"A failed check of monitor/{deployment}: what depends on it "
                        f"({FOLLOWS[what]}) runs, gated as always.")
        def _trigger() -> dg.DataVersion:
            return dg.DataVersion(f"by hand {time.time():.0f}")

    return _trigger
