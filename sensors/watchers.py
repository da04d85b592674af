"""Sensors that watch folders and S3 prefixes and start runs when files change.

One mechanism for both uses: a corpus's documents (-> re-index only what changed) and a dataset's
files (-> rebuild the dataset; adapters downstream retrain only if its content hash changed, are
evaluated, gated and, when promoted, hot-loaded into the running deployment).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import dagster as dg

from config.schema import FileSource, S3Source
from sensors.changes import Entry, diff, list_files, list_s3
from worker.s3 import split_url

Listing = Callable[[], list[Entry]]


def listing_for(source: FileSource | S3Source, root: Path, s3_endpoint_url: str | None
                ) -> Listing:
    if isinstance(source, S3Source):
        bucket, _ = split_url(source.s3)
        return lambda: [Entry(f"s3://{bucket}/{e.key}", e.modified, e.etag)
                        for e in list_s3(source.s3, s3_endpoint_url)]
    return lambda: list_files(source.path, root)


def watch_sensor(name: str, job: dg.UnresolvedAssetJobDefinition, listings: list[Listing],
                 interval_s: int) -> dg.SensorDefinition:
    @dg.sensor(name=name, job=job, minimum_interval_seconds=interval_s,
               default_status=dg.DefaultSensorStatus.RUNNING,
               description=f"Starts {job.name} when watched files are added, changed or "
                           "removed (cursor: the last listing).")
    def _watch(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        entries = [e for listing in listings for e in listing()]
        changes = diff(entries, context.cursor)
        if not changes.any:
            return dg.SensorResult(skip_reason=f"no change in {len(entries)} files",
                                   cursor=changes.cursor())
        context.log.info(f"{name}: {changes.summary()}")
        run = dg.RunRequest(run_key=changes.run_key(), tags={
            "factory/trigger": name, "factory/changes": changes.summary()})
        return dg.SensorResult(run_requests=[run], cursor=changes.cursor())

    return _watch
