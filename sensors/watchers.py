"""Sensors that watch folders and S3 prefixes and record what changed as an observation.

One mechanism for both uses: a corpus's documents and a dataset's files. Each sensor lists its
sources, diffs the listing against its cursor and, when something was added, changed or removed,
records an observation of the watched asset (assets/watched.py) whose data version is the
new listing. The corpus or dataset reading the files rebuilds by its automation condition
(sensors/automation.py), and so does what depends on it: re-index only what changed, or rebuild
the dataset (adapters retrain only if its content hash changed, are evaluated, gated and, when
promoted, hot-loaded). A crash between the observation and the cursor write re-records the same
version, which Dagster's automation counts once.
"""

from __future__ import annotations

import json

import dagster as dg

from assets.monitors import CHECKS, FOLLOWS, monitor_key, trigger_key
from assets.watched import FEEDBACK_KEY, FeedbackWatch, Watch
from ingest.listings import LISTING_KEY, listing_digest
from resources.gateway_admin import GatewayUnavailable
from sensors.changes import diff

DATA_VERSION_TAG = "dagster/data_version"  # what Dagster reads an observation's version from


def materialized(instance: dg.DagsterInstance, asset: dg.AssetKey, key: str) -> object:
    """A metadata value of the asset's latest materialization (None: none, or not recorded)."""
    event = instance.get_latest_materialization_event(asset)
    if event is None or event.asset_materialization is None:
        return None
    recorded = event.asset_materialization.metadata.get(key)
    return recorded.value if recorded is not None else None


def materialized_listing(instance: dg.DagsterInstance, asset: dg.AssetKey) -> str | None:
    recorded = materialized(instance, asset, LISTING_KEY)
    return None if recorded is None else str(recorded)


def watch_sensor(watch: Watch) -> dg.SensorDefinition:
    reader = watch.reader.to_user_string()

    @dg.sensor(name=watch.sensor_name, minimum_interval_seconds=watch.interval_s,
               default_status=dg.DefaultSensorStatus.RUNNING,
               description=f"Records an observation of {watch.key.to_user_string()} when "
                           f"watched files are added, changed or removed, so {reader} and what "
                           "depends on it rebuild (cursor: the last listing; with none yet, "
                           f"what {reader} last read).")
    def _watch(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        entries = [e for listing in watch.listings for e in listing()]
        changes = diff(entries, context.cursor)
        digest = listing_digest(entries)
        if context.cursor is None and changes.any and materialized_listing(
                context.instance, watch.reader) == digest:
            return dg.SensorResult(
                skip_reason=f"first look: the {len(entries)} files are what {reader} last "
                            "materialized", cursor=changes.cursor())
        if not changes.any:
            return dg.SensorResult(skip_reason=f"no change in {len(entries)} files",
                                   cursor=changes.cursor())
        context.log.info(f"{watch.sensor_name}: {changes.summary()}")
        observation = dg.AssetObservation(
            asset_key=watch.key, tags={DATA_VERSION_TAG: digest},
            metadata={"changes": changes.summary(), "files": len(entries),
                      "added": changes.added[:50], "updated": changes.updated[:50],
                      "removed": changes.removed[:50]})
        return dg.SensorResult(asset_events=[observation], cursor=changes.cursor())

    return _watch


def feedback_sensor(watch: FeedbackWatch) -> dg.SensorDefinition:
    reader = watch.reader.to_user_string()

    @dg.sensor(name=watch.sensor_name, minimum_interval_seconds=watch.poll_s,
               default_status=dg.DefaultSensorStatus.RUNNING,
               description=f"Records an observation of {watch.key.to_user_string()} once "
                           f"{watch.rebuild_after} new feedback arrived at the gateway, so "
                           f"{reader} and what trains on it rebuild (cursor: the feedback "
                           f"counted at the last observation; with none yet, what {reader} "
                           "last read).")
    def _feedback(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        try:
            count, newest = watch.count()
        except GatewayUnavailable as exc:
            context.log.warning(f"{watch.sensor_name}: {exc}")
            return dg.SensorResult(skip_reason=f"the gateway did not answer: {exc}")
        if context.cursor is not None:
            baseline = int(json.loads(context.cursor)["count"])
        else:
            baseline = int(materialized(context.instance, watch.reader, FEEDBACK_KEY) or 0)
        fresh = count - baseline
        if fresh < watch.rebuild_after:
            return dg.SensorResult(
                skip_reason=f"{max(fresh, 0)} new feedback of the {watch.rebuild_after} that "
                            f"rebuild {reader}", cursor=json.dumps({"count": baseline}))
        context.log.info(f"{watch.sensor_name}: {fresh} new feedback; {reader} rebuilds")
        observation = dg.AssetObservation(
            asset_key=watch.key, tags={DATA_VERSION_TAG: f"{count}:{newest}"},
            metadata={"feedback": count, "new": fresh, "newest_id": newest})
        return dg.SensorResult(asset_events=[observation], cursor=json.dumps({"count": count}))

    return _feedback


def monitor_trigger_sensor(deployment: str, what: str) -> dg.SensorDefinition:
    """Turns a check of monitor/<deployment> that starts failing into an observation of its
    trigger, once per incident (as alerts are sent), so Declarative Automation re-evaluates or
    retrains once, not on every failing tick; a check must pass again before it triggers again."""
    monitor = monitor_key(deployment)
    checks = [dg.AssetCheckKey(monitor, check) for check in CHECKS]

    @dg.sensor(name=f"monitor_trigger_{deployment.replace('-', '_')}",
               minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING,
               description=f"When a check of {monitor.to_user_string()} starts failing, records "
                           f"an observation of {trigger_key(deployment).to_user_string()}: "
                           f"{FOLLOWS[what]} follows (cursor: the evaluations seen and the "
                           "checks failing at the last).")
    def _trigger(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        cursor = json.loads(context.cursor) if context.cursor else {}
        upgraded = bool(cursor) and "seen" not in cursor  # an ids-only cursor (before 12-07)
        seen = cursor if upgraded else cursor.get("seen", {})
        failing = set() if upgraded else set(cursor.get("failing", ()))
        latest = context.instance.event_log_storage.get_latest_asset_check_execution_by_key(
            checks)
        started = []
        for key, record in latest.items():
            if record.status.value not in ("SUCCEEDED", "FAILED"):
                continue  # planned, still running: its result comes with a later tick
            failed = record.status.value == "FAILED"
            if record.id <= seen.get(key.name, 0):
                if upgraded and failed:  # failing before the upgrade: not a new incident
                    failing.add(key.name)
                continue
            seen[key.name] = record.id
            if not failed:
                failing.discard(key.name)
            elif key.name not in failing:
                failing.add(key.name)
                started.append((key.name, record.id))
        after = json.dumps({"seen": seen, "failing": sorted(failing)})
        if not started:
            return dg.SensorResult(skip_reason="no check started failing", cursor=after)
        context.log.info(f"{monitor.to_user_string()}: {started}; {FOLLOWS[what]} follows")
        return dg.SensorResult(asset_events=[dg.AssetObservation(
            asset_key=trigger_key(deployment),
            tags={DATA_VERSION_TAG: ",".join(f"{c}:{i}" for c, i in started)},
            metadata={"failed": [c for c, _ in started]})], cursor=after)

    return _trigger
