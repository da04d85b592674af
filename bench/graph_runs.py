"""What several benchmarks start from: one adapter trained through the asset graph, in process on
an ephemeral Dagster instance, with its base model and dataset."""

from __future__ import annotations

from typing import Any

import dagster as dg

from config.schema import FactoryConfig
from pipelines.graph import make_definitions


def trained_adapter(config: FactoryConfig, base_model: str, dataset: str, adapter: str
                    ) -> dict[str, Any]:
    """Materialize base_model/<base_model>, dataset/<dataset> and adapter/<adapter>; returns the
    adapter's materialization metadata."""
    key = dg.AssetKey(["adapter", adapter])
    result = make_definitions(config).resolve_job_def("everything").execute_in_process(
        instance=dg.DagsterInstance.ephemeral(), asset_selection=[
            dg.AssetKey(["base_model", base_model]), dg.AssetKey(["dataset", dataset]), key])
    assert result.success
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key == key]
    return {k: v.value for k, v in event.materialization.metadata.items()}
