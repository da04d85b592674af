"""Gateway usage materialized as an asset from the audit log (the embedded SQLite default)."""

from pathlib import Path

import dagster as dg
import yaml

from config.loading import load_config
from gateway.db import AuditRecord, make_engine, session_factory
from gateway.tenancy import Tenancy
from pipelines.graph import make_definitions


def test_usage_asset_sums_requests_and_tokens_per_project(tmp_path: Path) -> None:
    (tmp_path / "factory.yaml").write_text(yaml.safe_dump({
        "storage": {"object_store": "file://store", "work_dir": "work"},
        "gateway": {"database_url": "sqlite:///work/gateway.db"}}))
    config = load_config(tmp_path / "factory.yaml")
    (tmp_path / "work").mkdir()
    sessions = session_factory(make_engine(f"sqlite:///{tmp_path / 'work' / 'gateway.db'}"))
    tenancy = Tenancy(sessions, 60, 1000)
    for project in ("team-a", "team-b"):
        tenancy.create_project(project, owner="alice")
    key_a = tenancy.create_key("team-a", "alice")["id"]
    key_b = tenancy.create_key("team-b", "alice")["id"]
    with sessions.begin() as s:
        for key, project, tokens in ((key_a, 1, 10), (key_a, 1, 5), (key_b, 2, 7)):
            s.add(AuditRecord(ts=0.0, day="2026-11-23", key_id=key, project_id=project,
                              route="chat.completions", model="m", status=200,
                              prompt_tokens=tokens, completion_tokens=1, latency_ms=1.0))
    result = make_definitions(config).resolve_job_def("everything").execute_in_process(
        instance=dg.DagsterInstance.ephemeral(),
        asset_selection=[dg.AssetKey(["gateway", "usage"])])
    (event,) = result.get_asset_materialization_events()
    meta = {k: v.value for k, v in event.materialization.metadata.items()}
    assert (meta["requests"], meta["prompt_tokens"], meta["projects"]) == (3, 22, 2)
    assert "| 2026-11-23 | team-a |" in meta["by_day_project_key"]
