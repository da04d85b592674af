"""Gateway usage materialized as an asset through the gateway's admin API, never its database."""

from pathlib import Path

import dagster as dg
import pytest
import yaml

from assets.usage import USAGE
from config.gateway import GatewaySettings
from config.loading import load_config
from gateway.db import AuditRecord
from pipelines.graph import make_definitions
from tests.support.gateway_fixtures import ADMIN_TOKEN, serve


def usage_project(tmp_path: Path, gateway_url: str, **schedules: str) -> dg.Definitions:
    (tmp_path / "factory.yaml").write_text(yaml.safe_dump({
        "storage": {"object_store": "file://store", "work_dir": "work"},
        "gateway": {"url": gateway_url}, "schedules": schedules}))
    return make_definitions(load_config(tmp_path / "factory.yaml"))


def materialize_usage(defs: dg.Definitions) -> dg.ExecuteInProcessResult:
    return defs.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=dg.DagsterInstance.ephemeral(), asset_selection=[USAGE], raise_on_error=False)


def test_usage_asset_sums_requests_and_tokens_per_project(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACTORY_GATEWAY_ADMIN_TOKEN", ADMIN_TOKEN)
    settings = GatewaySettings(database_url=f"sqlite:///{tmp_path / 'gateway.db'}")
    for url, gateway in serve(settings):
        tenancy = gateway.tenancy
        for project in ("team-a", "team-b"):
            tenancy.create_project(project, owner="alice")
        key_a = tenancy.create_key("team-a", "alice")["id"]
        key_b = tenancy.create_key("team-b", "alice")["id"]
        with tenancy.sessions.begin() as s:
            for key, project, tokens in ((key_a, 1, 10), (key_a, 1, 5), (key_b, 2, 7)):
                s.add(AuditRecord(ts=0.0, day="2026-11-23", key_id=key, project_id=project,
                                  route="chat.completions", model="m", status=200,
                                  prompt_tokens=tokens, completion_tokens=1, latency_ms=1.0))
        defs = usage_project(tmp_path, url, usage="0 * * * *")
        result = materialize_usage(defs)
        assert result.success
        (event,) = result.get_asset_materialization_events()
        meta = {k: v.value for k, v in event.materialization.metadata.items()}
        assert (meta["requests"], meta["prompt_tokens"], meta["projects"]) == (3, 22, 2)
        assert "| 2026-11-23 | team-a |" in meta["by_day_project_key"]
        # the schedule is the asset's own automation condition, not a job of the graph's
        usage = defs.resolve_assets_def(USAGE)
        assert "0 * * * *" in str(usage.automation_conditions_by_key[USAGE])
        everything = defs.resolve_job_def("everything").asset_layer.selected_asset_keys
        assert USAGE not in everything


def test_usage_without_a_gateway_fails_and_names_what_to_start(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.support.live_server import free_port

    monkeypatch.setenv("FACTORY_GATEWAY_ADMIN_TOKEN", ADMIN_TOKEN)
    result = materialize_usage(usage_project(tmp_path, f"http://127.0.0.1:{free_port()}"))
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    error = failure.step_failure_data.error.to_string()  # type: ignore[union-attr]
    assert "did not answer /usage" in error and "factory-gateway serve" in error
    assert not (tmp_path / "work" / "runs" / "usage" / "usage.json").exists()
