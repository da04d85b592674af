"""Sensors that watch folders and S3 prefixes and start runs when files change.

One mechanism for both uses: a corpus's documents (-> re-index only what changed) and a dataset's
files (-> rebuild the dataset; adapters downstream retrain only if its content hash changed, are
evaluated, gated and, when promoted, hot-loaded into the running deployment).
"""

from __future__ import annotations

import dagster as dg

from assets.ingest.listings import LISTING_KEY, Listing, listing_digest
from sensors.changes import diff


def materialized_listing(instance: dg.DagsterInstance, asset: dg.AssetKey) -> str | None:
    event = instance.get_latest_materialization_event(asset)
    if event is None or event.asset_materialization is None:
        return None
    recorded = event.asset_materialization.metadata.get(LISTING_KEY)
    return str(recorded.value) if recorded is not None else None


def watch_sensor(name: str, job: dg.UnresolvedAssetJobDefinition, asset: dg.AssetKey,
                 listings: list[Listing], interval_s: int) -> dg.SensorDefinition:
    @dg.sensor(name=name, job=job, minimum_interval_seconds=interval_s,
               default_status=dg.DefaultSensorStatus.RUNNING,
               description=f"Starts {job.name} when watched files are added, changed or "
                           f"removed (cursor: the last listing; with none yet, what "
                           f"{asset.to_user_string()} last read).")
    def _watch(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        entries = [e for listing in listings for e in listing()]
        changes = diff(entries, context.cursor)
        if context.cursor is None and changes.any and materialized_listing(
                context.instance, asset) == listing_digest(entries):
            return dg.SensorResult(
                skip_reason=f"first look: the {len(entries)} files are what "
                            f"{asset.to_user_string()} last materialized", cursor=changes.cursor())
        if not changes.any:
            return dg.SensorResult(skip_reason=f"no change in {len(entries)} files",
                                   cursor=changes.cursor())
        context.log.info(f"{name}: {changes.summary()}")
        run = dg.RunRequest(run_key=changes.run_key(), tags={
            "factory/trigger": name, "factory/changes": changes.summary()})
        return dg.SensorResult(run_requests=[run], cursor=changes.cursor())

    return _watch
