"""The production instance config (infra/dagster/dagster.postgres.yaml) keeps runs in Postgres."""

import shutil
import uuid
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy

from config.loading import load_config
from pipelines.graph import REPO_ROOT, make_definitions

PG_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"


@pytest.fixture
def pg_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    try:
        sqlalchemy.create_engine(PG_URL).connect().close()
    except sqlalchemy.exc.OperationalError as exc:
        pytest.fail(f"PostgreSQL is expected on 127.0.0.1:5432 (database test): {exc}")
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO_ROOT / "infra" / "dagster" / "dagster.postgres.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("DAGSTER_PG_URL", PG_URL)
    return home


def test_materializations_are_recorded_in_postgres(pg_home: Path, tmp_path: Path) -> None:
    config_path = tmp_path / "factory.yaml"
    shutil.copy(Path(__file__).parents[1] / "configs" / "small.yaml", config_path)
    defs = make_definitions(load_config(config_path))
    key = dg.AssetKey(["corpus", "filings"])
    tag = str(uuid.uuid4())
    with dg.DagsterInstance.get() as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        result = defs.resolve_job_def("everything").execute_in_process(
            instance=instance, asset_selection=[key], tags={"test": tag})
        assert result.success
        event = instance.get_latest_materialization_event(key)
        assert event is not None and event.run_id == result.run_id
    with sqlalchemy.create_engine(PG_URL).connect() as conn:
        stored = conn.execute(sqlalchemy.text(
            "select count(*) from run_tags where key = 'test' and value = :tag"), {"tag": tag})
        assert stored.scalar() == 1
