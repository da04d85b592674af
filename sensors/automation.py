"""The automation of a project, declared on the assets: one table of automation conditions and
the sensors that evaluate and feed them, generated from factory.yaml.

- What depends on a changed input rebuilds by itself: every asset downstream of the user's data
  and models (adapters, evaluations, promotions, mixtures, deployments, served evaluations,
  indexes) is requested when one of its inputs updated, once none is missing or in progress and
  every blocking check of its inputs passed (a failed promotion gate stops the chain there).
  Assets requested on one tick run together, so a changed dataset retrains, evaluates, promotes
  and hot-loads in one run.
- A corpus or dataset with `watch:` rebuilds when its watched listing changed (the watch sensor
  records it: sensors/watchers.py); one fed by a corpus rebuilds when the corpus did; one read
  from traffic rebuilds when `rebuild_after` new feedback arrived (the feedback sensor); one
  whose adapter a failing monitor retrains rebuilds when the monitor's trigger is observed, and
  so does a served evaluation a failing monitor re-runs.
- Cron expressions in `schedules` (and each deployment's `hot_adapters.review` and
  `monitor.schedule`) are conditions too: retrain the datasets, re-score what is served,
  re-apply the hot-adapter policy, read usage, watch what is served.
- The Studio's own trainings are not automated: a member launches them and an owner promotes.
"""

from __future__ import annotations

import dagster as dg

from assets.monitors import monitor_key, monitored, retrain_triggers, trigger_asset, triggered
from assets.usage import USAGE
from assets.watched import feedback_asset, feedback_watches, watched_asset, watches
from config.common import STUDIO_SEPARATOR
from config.schema import FactoryConfig
from sensors.watchers import feedback_sensor, monitor_trigger_sensor, watch_sensor

Condition = dg.AutomationCondition
# inputs that only the user (or a watch) changes: never rebuilt on their own
ROOTS = {"base_model", "corpus", "dataset", "watched", "feedback", "trigger", "gateway"}


def rebuild(optional: list[dg.AssetKey]) -> dg.AutomationCondition:
    """eager(), once every blocking check of the inputs passed; inputs in `optional` may be
    missing (a deployment serves the Studio adapters that have a champion and skips the rest:
    an unpromoted Studio training must not hold back a declared adapter's new champion)."""
    eager = Condition.eager().replace("any_deps_missing", Condition.any_deps_missing().ignore(
        dg.AssetSelection.assets(*optional))) if optional else Condition.eager()
    return (eager & Condition.all_deps_blocking_checks_passed()).with_label(
        "an input changed (its blocking checks passed)")


def on_tick(cron: str) -> dg.AutomationCondition:
    return Condition.cron_tick_passed(cron, "UTC").since_last_handled().with_label(
        f"cron {cron} (UTC)")


def conditions_for(config: FactoryConfig, specs: list[dg.AssetSpec]
                   ) -> dict[dg.AssetKey, dg.AutomationCondition]:
    """Each automated asset's condition: the table the graph applies to `specs`."""
    watched_readers = {w.reader for w in [*watches(config), *feedback_watches(config)]} | {
        dg.AssetKey(["dataset", d]) for d in config.datasets if retrain_triggers(config, d)}
    plan = config.schedules
    conditions: dict[dg.AssetKey, dg.AutomationCondition] = {}
    for spec in specs:
        family, name = spec.key.path[0], spec.key.path[-1]
        if STUDIO_SEPARATOR in name:
            continue
        fed_by_a_corpus = family == "dataset" and any(
            dep.asset_key.path[0] == "corpus" for dep in spec.deps)
        if family not in ROOTS or spec.key in watched_readers or fed_by_a_corpus:
            conditions[spec.key] = rebuild([dep.asset_key for dep in spec.deps
                                            if STUDIO_SEPARATOR in dep.asset_key.path[-1]])
    crons: list[tuple[dg.AssetKey, str | None]] = [(USAGE, plan.usage)]
    crons += [(dg.AssetKey(["dataset", d]), plan.retrain) for d in config.datasets]
    crons += [(dg.AssetKey(["served_evaluation", d]), plan.reevaluate)
              for d, spec in config.deployments.items() if spec.evaluate]
    crons += [(dg.AssetKey(["deployment", d]), spec.hot_adapters.review)
              for d, spec in config.deployments.items() if spec.hot_adapters]
    crons += [(monitor_key(d), monitor.schedule) for d, monitor in monitored(config).items()]
    for key, cron in crons:
        if cron:
            conditions[key] = (conditions[key] | on_tick(cron)).with_label(
                f"an input changed, or cron {cron} (UTC)") if key in conditions else on_tick(cron)
    return conditions


def automation_for(config: FactoryConfig) -> tuple[list[dg.SourceAsset],
                                                   list[dg.SensorDefinition]]:
    """The watched listings (observable source assets), their watch sensors, and the sensor
    that evaluates every asset's condition (running by default, as the watch sensors are)."""
    found, rated = watches(config), feedback_watches(config)
    evaluator = dg.AutomationConditionSensorDefinition(
        "automation", target=dg.AssetSelection.all(), default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=config.schedules.automation_interval_s,
        run_tags={"dagster/max_runtime": str(config.compute.max_runtime_s)},
        description="Rebuilds what depends on a changed input (the conditions of "
                    "sensors/automation.py), gated by the inputs' blocking checks.")
    triggers = triggered(config)
    return ([watched_asset(w) for w in found] + [feedback_asset(w) for w in rated]
            + [trigger_asset(d, what) for d, what in triggers.items()],
            [watch_sensor(w) for w in found] + [feedback_sensor(w) for w in rated]
            + [monitor_trigger_sensor(d, what) for d, what in triggers.items()] + [evaluator])
