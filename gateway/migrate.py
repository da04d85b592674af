"""The gateway database's schema history: Alembic, its revisions in gateway/migrations/versions/.

Every schema change is a revision there, so an operator can run, check and roll back what the
gateway's code expects (`factory-gateway db ...`); nothing else adds tables or columns. A database
made before the history existed (tables by `create_all`, columns added by hand at startup) is
recognised by the columns it has and stamped with the revision it matches, then upgraded.

The version is kept in `gw_alembic_version`, not Alembic's default `alembic_version`, which a
Dagster instance sharing the database uses for its own storage.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, MetaData, inspect, text

SCRIPTS = Path(__file__).with_name("migrations")
VERSION_TABLE = "gw_alembic_version"
# one PostgreSQL advisory lock for every gateway: replicas starting together migrate one at a time
LOCK_KEY = 0x6777_6462  # "gwdb"
log = logging.getLogger(__name__)


def config(connection: Connection | None = None, url: str | None = None) -> Config:
    """Alembic's configuration without an alembic.ini: the scripts shipped in this package, run on
    `connection` (online) or rendered for `url`'s dialect (offline, `--sql`)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(SCRIPTS))
    cfg.set_main_option("file_template", "%%(rev)s_%%(slug)s")
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["connection"] = connection
    return cfg


def include_name(name: str | None, type_: str, parent_names: dict[str, Any]) -> bool:
    """Compare only the gateway's tables: a shared database (Dagster's, in the tests) has
    others, which are not ours to drop."""
    return type_ != "table" or (name or "").startswith("gw_")


@cache
def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(config())


def head() -> str:
    """The revision this code expects."""
    revision = _scripts().get_current_head()
    assert revision is not None, f"no revisions in {SCRIPTS}"
    return revision


def known(revision: str) -> bool:
    return any(s.revision == revision for s in _scripts().walk_revisions())


def current(connection: Connection) -> str | None:
    """The database's revision; None for an empty database or one made before migrations."""
    return MigrationContext.configure(
        connection, opts={"version_table": VERSION_TABLE}).get_current_revision()


def legacy_revision(connection: Connection) -> str | None:
    """The revision a database made before migrations matches, from the tables and columns it
    has (each revision is one change the old `create_all` and column additions made); None when
    it is under Alembic already or has no gateway tables."""
    found = inspect(connection)
    tables = set(found.get_table_names())
    if VERSION_TABLE in tables or "gw_projects" not in tables:
        return None
    quota_tables = {"gw_quotas", "gw_admin_audit"} & tables
    audio = {f"{t}.{c['name']}" for t in ("gw_audit", "gw_quotas") if t in tables
             for c in found.get_columns(t) if c["name"].startswith("audio_seconds")}
    if not quota_tables and not audio:
        return "0001"
    if len(quota_tables) == 2 and not audio:
        return "0002"
    if len(quota_tables) == 2 and len(audio) == 2:
        return "0003"
    raise RuntimeError(
        f"the gateway tables in this database match no revision (of gw_quotas and gw_admin_audit "
        f"it has {sorted(quota_tables)}, of the audio columns {sorted(audio)}): create the "
        "missing ones by hand as gateway/migrations/versions/ does, then `factory-gateway db "
        "upgrade`")


@contextmanager
def _locked(engine: Engine) -> Iterator[Connection]:
    """One transaction, holding the migration lock on PostgreSQL (DDL is transactional there, so
    a failed upgrade leaves the database as it was)."""
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})
        yield connection


def _adopt(connection: Connection) -> None:
    """Stamp a database made before migrations with the revision its tables match."""
    revision = legacy_revision(connection)
    if revision is not None:
        log.warning("gateway database made before migrations: stamped %s", revision)
        command.stamp(config(connection), revision)


def upgrade(engine: Engine, revision: str = "head") -> tuple[str | None, str | None]:
    """Bring the database to `revision`, adopting one made before migrations; returns the
    revisions before and after."""
    with _locked(engine) as connection:
        before = current(connection)
        if before is not None and not known(before):
            raise RuntimeError(f"the database is at revision {before}, which this gateway's code "
                               "does not know (a newer version upgraded it): run that version's "
                               "`factory-gateway db downgrade` first, or upgrade the code")
        _adopt(connection)
        command.upgrade(config(connection), revision)
        return before, current(connection)


def upgrade_at_start(engine: Engine) -> None:
    """What the gateway does when it opens its database: upgrade to head, so the embedded SQLite
    default (and a database an operator has not migrated yet) just works. A database a newer
    version already upgraded is left as it is, so rolling the image back still starts."""
    with _locked(engine) as connection:
        revision = current(connection)
        if revision is not None and not known(revision):
            log.warning("gateway database at revision %s, newer than this code's %s: left as it "
                        "is", revision, head())
            return
        if revision == head():
            return
        _adopt(connection)
        command.upgrade(config(connection), "head")


def downgrade(engine: Engine, revision: str) -> tuple[str | None, str | None]:
    with _locked(engine) as connection:
        before = current(connection)
        command.downgrade(config(connection), revision)
        return before, current(connection)


def render_sql(url: str, revision: str, downgrading: bool = False) -> None:
    """Print the SQL of an upgrade (or downgrade) for `url`'s dialect without connecting, for a
    DBA to review or run; `revision` may be a range, `0002:head`."""
    run = command.downgrade if downgrading else command.upgrade
    run(config(url=url), revision, sql=True)


def differences(engine: Engine, metadata: MetaData) -> list[Any]:
    """What the database's gateway tables lack or have beyond `metadata` (the models): empty
    when the migrations and the models agree."""
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={
            "compare_type": True, "include_name": include_name,
            "version_table": VERSION_TABLE})
        return compare_metadata(context, metadata)


def describe(difference: Any) -> str:
    """One line for one of `differences`: `add_column gw_audit.audio_seconds`."""
    if isinstance(difference, list):  # modify_*: one entry per changed attribute of a column
        return "; ".join(describe(d) for d in difference)
    op, *args = difference
    if op.startswith("modify_"):
        _schema, table, column, _info, old, new = args
        return f"{op} {table}.{column}: {old!r} -> {new!r}"
    if op.endswith("_column"):
        _schema, table, column = args
        return f"{op} {table}.{column.name}"
    return f"{op} {getattr(args[0], 'name', None) or args[0]}"


def new_revision(message: str, scratch: Engine) -> str:
    """Write the next revision, its operations generated from the models' difference to head
    (`scratch` is an empty database to build head in); returns its file's path."""
    upgrade(scratch)
    with scratch.connect() as connection:
        number = int(head()) + 1
        script = command.revision(config(connection), message, autogenerate=True,
                                  rev_id=f"{number:04d}")
    assert script is not None and not isinstance(script, list)
    return str(script.path)
