"""The gateway database's migrations (gateway/migrations/) on SQLite and PostgreSQL: a database
made before them is adopted with its rows and ends as a fresh one does, `factory-gateway db
upgrade` makes a fresh file, downgrades undo, and the models never drift from the head revision.
PostgreSQL runs in throwaway databases, dropped after each test."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import (
    Boolean,
    Column,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    inspect,
    select,
    text,
)
from sqlalchemy.orm import Session

from gateway import migrate
from gateway.db import AuditRecord, Base, Project, Quota, connect, make_engine
from tests.support.services import PG_URL

NewDatabase = Callable[[], str]


@pytest.fixture(params=["sqlite", "postgresql"])
def new_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[NewDatabase]:
    """Makes empty databases of one kind; PostgreSQL's are dropped after the test."""
    made: list[str] = []

    def make() -> str:
        name = f"gw_migrations_{uuid.uuid4().hex[:12]}"
        if request.param == "sqlite":
            return f"sqlite:///{tmp_path / name}.db"
        with server.connect() as connection:
            connection.execute(text(f"CREATE DATABASE {name}"))
        made.append(name)
        return PG_URL.rsplit("/", 1)[0] + f"/{name}"

    if request.param == "postgresql":
        server = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
        try:
            server.connect().close()
        except Exception as exc:
            pytest.fail(f"PostgreSQL (127.0.0.1:5432/test) is expected on this machine: {exc}")
    yield make
    for name in made:
        with server.connect() as connection:
            connection.execute(text(f"DROP DATABASE {name} WITH (FORCE)"))


def legacy_metadata(era: str) -> MetaData:
    """The tables the gateway's `create_all` made before migrations, frozen as the models of each
    era declared them: 0001 (2026-11-23), 0002 (quotas and the admin audit, 2026-11-29), 0003
    (the speech route's audio columns, 2026-12-05: today's models until migrations)."""
    metadata, audio = MetaData(), era == "0003"
    Table("gw_projects", metadata, Column("id", Integer, primary_key=True),
          Column("name", String(64), nullable=False, unique=True),
          Column("log_prompts", Boolean, nullable=False),
          Column("created_at", Float, nullable=False))
    Table("gw_members", metadata, Column("id", Integer, primary_key=True),
          Column("project_id", Integer, ForeignKey("gw_projects.id"), nullable=False),
          Column("user", String(128), nullable=False), Column("role", String(16), nullable=False),
          UniqueConstraint("project_id", "user"))
    Table("gw_api_keys", metadata, Column("id", Integer, primary_key=True),
          Column("project_id", Integer, ForeignKey("gw_projects.id"), nullable=False),
          Column("member_id", Integer, ForeignKey("gw_members.id"), nullable=False),
          Column("name", String(64), nullable=False),
          Column("prefix", String(16), nullable=False, index=True),
          Column("secret_hash", String(64), nullable=False, unique=True),
          Column("rpm", Integer, nullable=False), Column("tpm", Integer, nullable=False),
          Column("created_at", Float, nullable=False), Column("revoked_at", Float))
    if era != "0001":
        Table("gw_quotas", metadata,
              Column("project_id", Integer, ForeignKey("gw_projects.id"), primary_key=True),
              Column("rpm", Integer, nullable=False), Column("tpm", Integer, nullable=False),
              Column("max_keys", Integer, nullable=False),
              Column("max_in_flight", Integer, nullable=False),
              *([Column("audio_seconds_per_day", Integer, nullable=False,
                        server_default="36000")] if audio else []))
    Table("gw_grants", metadata, Column("id", Integer, primary_key=True),
          Column("project_id", Integer, ForeignKey("gw_projects.id"), nullable=False),
          Column("kind", String(16), nullable=False), Column("name", String(128), nullable=False),
          UniqueConstraint("project_id", "kind", "name"))
    Table("gw_audit", metadata, Column("id", Integer, primary_key=True),
          Column("ts", Float, nullable=False), Column("day", String(10), nullable=False),
          Column("key_id", Integer), Column("project_id", Integer),
          Column("route", String(64), nullable=False), Column("model", String(128)),
          Column("status", Integer, nullable=False), Column("error", String(64)),
          Column("prompt_tokens", Integer, nullable=False),
          Column("completion_tokens", Integer, nullable=False),
          *([Column("audio_seconds", Float, nullable=False, server_default="0")] if audio
            else []),
          Column("latency_ms", Float, nullable=False), Column("ttft_ms", Float),
          Column("replica", String(256)), Column("prompt_text", Text),
          Index("ix_gw_audit_project_day", "project_id", "day"))
    if era != "0001":
        Table("gw_admin_audit", metadata, Column("id", Integer, primary_key=True),
              Column("ts", Float, nullable=False), Column("actor", String(160), nullable=False),
              Column("client", String(64)), Column("action", String(64), nullable=False),
              Column("project", String(64)), Column("target", String(160)),
              Column("status", Integer, nullable=False), Column("error", String(64)))
    return metadata


def make_legacy_database(url: str, era: str) -> dict[str, int]:
    """A database as the gateway left it before migrations, with a project, member, key, audit
    row and quota in it; era `0002+added` is a 0002 database the gateway then started on with
    today's code, which added the audio columns by hand (the SQL it ran, frozen here)."""
    metadata = legacy_metadata(era.removesuffix("+added"))
    engine = create_engine(url)
    metadata.create_all(engine)
    tables = metadata.tables
    with engine.begin() as connection:
        if era.endswith("+added"):
            connection.execute(text("ALTER TABLE gw_quotas ADD COLUMN audio_seconds_per_day "
                                    "INTEGER NOT NULL DEFAULT 36000"))
            connection.execute(text("ALTER TABLE gw_audit ADD COLUMN audio_seconds FLOAT NOT "
                                    "NULL DEFAULT 0"))
        project = connection.execute(tables["gw_projects"].insert().values(
            name="acme", log_prompts=True, created_at=1.0)).inserted_primary_key[0]
        member = connection.execute(tables["gw_members"].insert().values(
            project_id=project, user="alice", role="owner")).inserted_primary_key[0]
        key = connection.execute(tables["gw_api_keys"].insert().values(
            project_id=project, member_id=member, name="k", prefix="sk-abc", secret_hash="h" * 64,
            rpm=60, tpm=1000, created_at=2.0)).inserted_primary_key[0]
        connection.execute(tables["gw_audit"].insert().values(
            ts=3.0, day="2026-12-01", key_id=key, project_id=project, route="/v1/chat",
            status=200, prompt_tokens=5, completion_tokens=7, latency_ms=12.5))
        if "gw_quotas" in tables:
            connection.execute(tables["gw_quotas"].insert().values(
                project_id=project, rpm=100, tpm=2000, max_keys=5, max_in_flight=3))
    engine.dispose()
    return {"project": project, "key": key}


def schema(engine: Engine) -> dict[str, Any]:
    """What the database holds, by table, in terms both dialects reflect alike: a server default
    `'0'::double precision` and `0` are the same default."""
    found = inspect(engine)

    def default(value: str | None) -> str | None:
        return None if value is None else re.sub(r"::[a-z ]+$", "", value).strip("'")

    return {table: {
        "columns": {c["name"]: (str(c["type"]), c["nullable"], default(c["default"]))
                    for c in found.get_columns(table)},
        "primary_key": found.get_pk_constraint(table)["constrained_columns"],
        "foreign_keys": sorted((tuple(f["constrained_columns"]), f["referred_table"],
                                tuple(f["referred_columns"]))
                               for f in found.get_foreign_keys(table)),
        "indexes": sorted((i["name"], tuple(i["column_names"]), bool(i["unique"]))
                          for i in found.get_indexes(table)),
        "unique": sorted((u["name"] or "", tuple(u["column_names"]))
                         for u in found.get_unique_constraints(table)),
    } for table in sorted(found.get_table_names())}


def fresh_schema(new_database: NewDatabase) -> dict[str, Any]:
    engine = connect(new_database())
    migrate.upgrade(engine)
    try:
        return schema(engine)
    finally:
        engine.dispose()


@pytest.mark.parametrize(("era", "stamped"), [
    ("0001", "0001"), ("0002", "0002"), ("0002+added", "0003"), ("0003", "0003")])
def test_a_database_made_before_migrations_is_adopted_with_its_rows(
        new_database: NewDatabase, era: str, stamped: str) -> None:
    url = new_database()
    ids = make_legacy_database(url, era)
    engine = connect(url)
    with engine.connect() as connection:
        assert migrate.legacy_revision(connection) == stamped
    assert migrate.upgrade(engine) == (None, migrate.head())
    with Session(engine) as session:
        project = session.scalars(select(Project)).one()
        audit = session.scalars(select(AuditRecord)).one()
        assert (project.id, project.name, project.log_prompts) == (ids["project"], "acme", True)
        assert (audit.key_id, audit.completion_tokens, audit.audio_seconds) == (ids["key"], 7, 0)
        if era != "0001":  # the quota row from before, the new column filled by its default
            assert session.get(Quota, ids["project"]).audio_seconds_per_day == 36_000
        session.add(Project(name="after", log_prompts=False))  # sequences continue
        session.commit()
    assert schema(engine) == fresh_schema(new_database)
    assert migrate.differences(engine, Base.metadata) == []
    engine.dispose()


def test_the_models_agree_with_the_head_revision(new_database: NewDatabase) -> None:
    engine = connect(new_database())
    migrate.upgrade(engine)
    found = [migrate.describe(d) for d in migrate.differences(engine, Base.metadata)]
    engine.dispose()
    assert found == [], ("gateway/db.py's models differ from gateway/migrations/ at head: write "
                         "a revision (`factory-gateway db revision 'what changed'`, then review "
                         f"it): {found}")


def test_downgrade_to_base_and_upgrade_again(new_database: NewDatabase) -> None:
    engine = connect(new_database())
    migrate.upgrade(engine)
    with Session(engine) as session:
        session.add(Project(name="acme", log_prompts=False))
        session.commit()
    assert migrate.downgrade(engine, "0002") == (migrate.head(), "0002")
    assert "audio_seconds" not in {c["name"] for c in inspect(engine).get_columns("gw_audit")}
    with engine.connect() as connection:  # one step down keeps the rows
        assert connection.execute(text("SELECT name FROM gw_projects")).scalars().all() == [
            "acme"]
    assert migrate.downgrade(engine, "base") == ("0002", None)
    assert [t for t in inspect(engine).get_table_names() if t != migrate.VERSION_TABLE] == []
    assert migrate.upgrade(engine) == (None, migrate.head())
    assert schema(engine) == fresh_schema(new_database)
    engine.dispose()


@pytest.mark.parametrize("new_database", ["postgresql"], indirect=True)
def test_a_failed_upgrade_leaves_postgres_as_it_was(new_database: NewDatabase) -> None:
    """PostgreSQL's DDL is transactional: 0002's first table is not left behind when its second
    fails."""
    engine = connect(new_database())
    migrate.upgrade(engine, "0001")
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE gw_admin_audit (x INTEGER)"))
    with pytest.raises(Exception, match="gw_admin_audit"):
        migrate.upgrade(engine)
    assert "gw_quotas" not in inspect(engine).get_table_names()
    with engine.connect() as connection:
        assert migrate.current(connection) == "0001"
    engine.dispose()


@pytest.mark.parametrize("new_database", ["postgresql"], indirect=True)
def test_gateways_starting_together_migrate_once(new_database: NewDatabase) -> None:
    """Two replicas of the gateway opening an empty database at once take turns (an advisory
    lock); SQLite is one file on one host, opened by one gateway."""
    url, failures = new_database(), []

    def start() -> None:
        try:
            make_engine(url).dispose()
        except Exception as exc:  # reported below, with the other thread's
            failures.append(exc)

    threads = [threading.Thread(target=start) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    engine = connect(url)
    with engine.connect() as connection:
        assert migrate.current(connection) == migrate.head()
    engine.dispose()


def test_the_gateway_upgrades_at_start_and_leaves_a_newer_database_alone(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    url = f"sqlite:///{tmp_path / 'gateway.db'}"
    make_legacy_database(url, "0002")
    engine = create_engine(url)
    with engine.begin() as connection:  # a Dagster instance sharing the database has its own
        connection.execute(text("CREATE TABLE alembic_version (version_num VARCHAR(32))"))
        connection.execute(text("INSERT INTO alembic_version VALUES ('dagster_rev')"))
    make_engine(url).dispose()  # what the gateway, the CLI and the demo do on opening it
    with engine.begin() as connection:
        assert migrate.current(connection) == migrate.head()
        connection.execute(text(f"UPDATE {migrate.VERSION_TABLE} SET version_num = '9999'"))
    with caplog.at_level(logging.WARNING, logger="gateway.migrate"):
        make_engine(url).dispose()  # an image rolled back after a newer one upgraded
    assert "newer than this code's" in caplog.text
    with pytest.raises(RuntimeError, match="does not know"):
        migrate.upgrade(engine)
    engine.dispose()


def gateway_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    command = Path(sys.executable).with_name("factory-gateway")
    return subprocess.run([str(command), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def test_db_upgrade_creates_the_tables_of_a_fresh_sqlite_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh' / 'gateway.db'}"
    done = gateway_cli("--database-url", url, "db", "upgrade", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"before": None, "after": migrate.head()}
    engine = create_engine(url)
    assert {t.name for t in Base.metadata.sorted_tables} | {migrate.VERSION_TABLE} == set(
        inspect(engine).get_table_names())
    engine.dispose()
    check = gateway_cli("--database-url", url, "db", "check", cwd=tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr
    assert json.loads(check.stdout)["differences"] == []
    down = gateway_cli("--database-url", url, "db", "downgrade", "-1", cwd=tmp_path)
    assert json.loads(down.stdout)["after"] == "0003"  # one before the head, 0004
    behind = gateway_cli("--database-url", url, "db", "check", cwd=tmp_path)
    assert behind.returncode == 1 and "gw_completions" in behind.stdout


def test_db_upgrade_sql_renders_postgres_ddl_without_a_server(tmp_path: Path) -> None:
    done = gateway_cli("--database-url", "postgresql+psycopg2://nobody@192.0.2.1:1/none", "db",
                       "upgrade", "--sql", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "CREATE TABLE gw_projects" in done.stdout
    assert "ALTER TABLE gw_audit ADD COLUMN audio_seconds FLOAT DEFAULT '0' NOT NULL" in done.stdout
    assert "INSERT INTO gw_alembic_version (version_num) VALUES ('0001')" in done.stdout
