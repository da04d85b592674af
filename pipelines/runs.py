"""Running a project's assets in one Dagster run on its own instance: the settings of that
instance, the run itself (a selection with whatever upstream the instance never made) and what
failed in it. The `factory` CLI and `factory forget` run through here."""

from __future__ import annotations

import os
from pathlib import Path

from config.schema import FactoryConfig


def instance_settings(config: FactoryConfig) -> str:
    """Run monitoring stops runs past their `dagster/max_runtime` tag (training jobs carry
    compute.max_runtime_s); training steps share pools limited to compute.concurrency."""
    return (f"# written by `factory` from {config.root}/factory.yaml (compute section)\n"
            "telemetry:\n  enabled: false\n"
            "run_monitoring:\n  enabled: true\n  poll_interval_seconds: 30\n"
            f"concurrency:\n  pools:\n    default_limit: {config.compute.concurrency}\n")


def dagster_home(config: FactoryConfig) -> Path:
    """Project-local instance; an explicit DAGSTER_HOME (e.g. Postgres-backed) wins."""
    explicit = os.environ.get("DAGSTER_HOME")
    home = Path(explicit or config.work_dir / "dagster_home")
    home.mkdir(parents=True, exist_ok=True)
    settings = home / "dagster.yaml"
    if not settings.exists() or settings.read_text().startswith("# written by `factory`"):
        settings.write_text(instance_settings(config))
    os.environ["DAGSTER_HOME"] = str(home)
    return home


class SelectionError(ValueError):
    """A selected asset key that the project does not define."""


def materialize(config: FactoryConfig, keys: list[str] | None = None,
                tags: dict[str, str] | None = None) -> object:
    """Run the whole graph, or the assets `keys` name ("dataset/chat") together with every
    asset upstream of them that this instance has never materialized: a selection never fails
    on a missing input that the graph could have made. Returns Dagster's run result."""
    import dagster as dg  # here: the CLI's other commands start without loading the graph

    from pipelines.graph import make_definitions

    dagster_home(config)
    defs = make_definitions(config)
    # the whole graph is `everything`; a selection may also name what it leaves out (gateway/usage)
    job = defs.resolve_implicit_global_asset_job_def() if keys else defs.resolve_job_def(
        "everything")
    tags = {"dagster/max_runtime": str(config.compute.max_runtime_s), **(tags or {})}
    with dg.DagsterInstance.get() as instance:
        selection = None
        if keys:
            graph = defs.resolve_asset_graph()
            wanted = {dg.AssetKey(key.strip("/").split("/")) for key in keys}
            unknown = sorted(k.to_user_string() for k in wanted if not graph.has(k))
            if unknown:
                names = sorted(k.to_user_string() for k in graph.get_all_asset_keys())
                raise SelectionError(f"no asset {', '.join(unknown)} in {config.root}/"
                                     f"factory.yaml; assets are: {', '.join(names)}")
            upstream = dg.AssetSelection.assets(*wanted).upstream().resolve(graph)
            selection = sorted(wanted | {
                k for k in upstream - wanted
                if instance.get_latest_materialization_event(k) is None})
        return job.execute_in_process(instance=instance, asset_selection=selection,
                                      raise_on_error=False, tags=tags)


def failed_steps(result: object) -> tuple[list[str], list[str]]:
    """(failed asset steps, failed checks): a failed promotion gate is an outcome, not a crash."""
    assets, checks = [], []
    for event in result.all_events:  # type: ignore[attr-defined]
        if event.event_type_value == "STEP_FAILURE":
            error = event.step_failure_data.error
            cls = error.cause.cls_name if error and error.cause else (error.cls_name if error
                                                                      else "")
            target = checks if cls == "DagsterAssetCheckFailedError" else assets
            target.append(f"{event.step_key}: {(error.cause or error).message.strip()[:300]}"
                          if error else event.step_key)
    return assets, checks
