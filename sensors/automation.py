"""The automation of a project: watch sensors and schedules, generated from factory.yaml.

Each corpus with a folder/S3 source gets a re-index job and a sensor; each dataset with `watch:`
gets a retrain job (the dataset and everything downstream: adapters, evaluations, promotions,
deployments) and a sensor. Schedules re-evaluate what is served, optionally retrain, and
re-apply each deployment's hot-adapter policy to the latest traffic.
"""

from __future__ import annotations

import dagster as dg

from assets.ingest.listings import corpus_suffixes, watched_listings
from config.datasets import FileSource, S3Source
from config.schema import FactoryConfig
from sensors.watchers import watch_sensor


def reindex_job(corpus: str) -> dg.UnresolvedAssetJobDefinition:
    return dg.define_asset_job(
        f"reindex_{corpus.replace('-', '_')}",
        selection=dg.AssetSelection.assets(["corpus", corpus], ["index", corpus]),
        description=f"Parse corpus '{corpus}' and re-index only what changed.")


def retrain_job(dataset: str, max_runtime_s: int) -> dg.UnresolvedAssetJobDefinition:
    return dg.define_asset_job(
        f"retrain_{dataset.replace('-', '_')}",
        selection=dg.AssetSelection.assets(["dataset", dataset]).downstream(),
        tags={"dagster/max_runtime": str(max_runtime_s)},
        description=f"Rebuild dataset '{dataset}'; adapters on it retrain when its content "
                    "changed, are evaluated and gated, and promoted ones are hot-loaded.")


def automation_for(config: FactoryConfig) -> tuple[list[dg.UnresolvedAssetJobDefinition],
                                                   list[dg.SensorDefinition],
                                                   list[dg.ScheduleDefinition]]:
    jobs, sensors = [], []
    endpoint = config.storage.s3_endpoint_url
    for name, spec in config.corpora.items():
        job = reindex_job(name)
        jobs.append(job)
        if isinstance(spec.source, FileSource | S3Source) and spec.watch.enabled:
            sensors.append(watch_sensor(
                f"watch_corpus_{name.replace('-', '_')}", job, dg.AssetKey(["corpus", name]),
                watched_listings([spec.source], config.root, endpoint, corpus_suffixes(spec)),
                spec.watch.interval_s))
    for name, spec in config.datasets.items():
        job = retrain_job(name, config.compute.max_runtime_s)
        jobs.append(job)
        if spec.watch and spec.watch.enabled:
            sensors.append(watch_sensor(
                f"watch_dataset_{name.replace('-', '_')}", job, dg.AssetKey(["dataset", name]),
                watched_listings(spec.sources, config.root, endpoint), spec.watch.interval_s))

    schedules = []
    plan = config.schedules
    served = [dg.AssetKey(["served_evaluation", d]) for d, spec in config.deployments.items()
              if spec.evaluate]
    if plan.reevaluate and served:
        job = dg.define_asset_job("reevaluate", selection=dg.AssetSelection.assets(*served),
                                  description="Score what is served; regressions fail a check.")
        jobs.append(job)
        schedules.append(dg.ScheduleDefinition(
            name="nightly_reevaluation", job=job, cron_schedule=plan.reevaluate,
            default_status=dg.DefaultScheduleStatus.RUNNING))
    if plan.retrain and config.datasets:
        job = dg.define_asset_job(
            "retrain_all", selection=dg.AssetSelection.assets(
                *[["dataset", d] for d in config.datasets]).downstream(),
            tags={"dagster/max_runtime": str(config.compute.max_runtime_s)},
            description="Rebuild every dataset and retrain what depends on it.")
        jobs.append(job)
        schedules.append(dg.ScheduleDefinition(
            name="scheduled_retrain", job=job, cron_schedule=plan.retrain,
            default_status=dg.DefaultScheduleStatus.RUNNING))
    for name, spec in config.deployments.items():
        if spec.hot_adapters is not None and spec.hot_adapters.review:
            job = dg.define_asset_job(
                f"review_hot_adapters_{name.replace('-', '_')}",
                selection=dg.AssetSelection.assets(["deployment", name]),
                description=f"Materialize deployment '{name}' again: its hot adapters follow "
                            "the latest traffic (each change shown in its metadata).")
            jobs.append(job)
            schedules.append(dg.ScheduleDefinition(
                name=f"review_hot_adapters_{name.replace('-', '_')}", job=job,
                cron_schedule=spec.hot_adapters.review,
                default_status=dg.DefaultScheduleStatus.RUNNING))
    return jobs, sensors, schedules
