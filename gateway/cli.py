"""`factory-gateway`: run the gateway and manage projects, members, keys, grants and usage.

Management commands talk to the gateway's database directly (the same code as the admin API).
"""

from __future__ import annotations

import json
from typing import Any

import click

from config.gateway import GatewaySettings
from gateway.settings import load_settings


def _settings(ctx: click.Context) -> GatewaySettings:
    return ctx.obj["settings"]


def _tenancy(ctx: click.Context):  # type: ignore[no-untyped-def]
    from gateway.db import make_engine, session_factory
    from gateway.tenancy import Tenancy

    s = _settings(ctx)
    return Tenancy(session_factory(make_engine(s.database_url)), s.default_rpm, s.default_tpm,
                   default_quota=s.project_quota)


def _echo(value: Any) -> None:
    click.echo(json.dumps(value, indent=2))


@click.group()
@click.option("--config", default=None,
              help="project file whose `gateway:` section configures the gateway "
                   "[default: $FACTORY_CONFIG or factory.yaml]")
@click.option("--database-url", default=None, help="override gateway.database_url")
@click.pass_context
def main(ctx: click.Context, config: str | None, database_url: str | None) -> None:
    """The OpenAI-compatible gateway of Adapter Factory."""
    import os
    from pathlib import Path

    config = config or os.environ.get("FACTORY_CONFIG", "factory.yaml")
    ctx.obj = {"settings": load_settings(config if Path(config).exists() else None,
                                         database_url=database_url)}


@main.command()
@click.option("--host", default=None)
@click.option("--port", default=None, type=int)
@click.pass_context
def serve(ctx: click.Context, host: str | None, port: int | None) -> None:
    """Run the gateway (uvicorn)."""
    import uvicorn

    from gateway.app import create_app

    settings = _settings(ctx)
    # uvloop and httptools by name, not uvicorn's "auto": a missing one fails here instead of
    # silently halving what the gateway passes through on a busy host
    uvicorn.run(create_app(settings), host=host or settings.host, port=port or settings.port,
                loop="uvloop", http="httptools", log_level="info")


@main.group()
def project() -> None:
    """Projects and their members."""


@project.command("create")
@click.argument("name")
@click.option("--owner", required=True)
@click.option("--log-prompts", is_flag=True, help="keep prompt text in the audit log")
@click.pass_context
def project_create(ctx: click.Context, name: str, owner: str, log_prompts: bool) -> None:
    _echo(_tenancy(ctx).create_project(name, owner, log_prompts))


@project.command("member")
@click.argument("name")
@click.argument("user")
@click.option("--role", type=click.Choice(["owner", "member", "viewer"]), default="member")
@click.pass_context
def project_member(ctx: click.Context, name: str, user: str, role: str) -> None:
    _echo(_tenancy(ctx).add_member(name, user, role))


@project.command("grant")
@click.argument("name")
@click.argument("model")
@click.option("--kind", type=click.Choice(["model", "collection"]), default="model")
@click.pass_context
def project_grant(ctx: click.Context, name: str, model: str, kind: str) -> None:
    _echo(_tenancy(ctx).grant(name, model, kind))


@project.command("revoke")
@click.argument("name")
@click.argument("model")
@click.option("--kind", type=click.Choice(["model", "collection"]), default="model")
@click.pass_context
def project_revoke(ctx: click.Context, name: str, model: str, kind: str) -> None:
    """Take a grant back."""
    _echo(_tenancy(ctx).revoke_grant(name, model, kind))


@project.command("quota")
@click.argument("name")
@click.option("--rpm", type=click.IntRange(1, 2**31 - 1), default=None)
@click.option("--tpm", type=click.IntRange(1, 2**31 - 1), default=None)
@click.option("--max-keys", type=click.IntRange(1, 100_000), default=None)
@click.option("--max-in-flight", type=click.IntRange(1, 100_000), default=None)
@click.option("--audio-seconds-per-day", type=click.IntRange(0, 2**31 - 1), default=None)
@click.pass_context
def project_quota(ctx: click.Context, name: str, rpm: int | None, tpm: int | None,
                  max_keys: int | None, max_in_flight: int | None,
                  audio_seconds_per_day: int | None) -> None:
    """Show a project's ceilings, or change the ones given (all keys together)."""
    tenancy = _tenancy(ctx)
    changes = {"rpm": rpm, "tpm": tpm, "max_keys": max_keys, "max_in_flight": max_in_flight,
               "audio_seconds_per_day": audio_seconds_per_day}
    if all(v is None for v in changes.values()):
        _echo(tenancy.quota(name))
    else:
        _echo(tenancy.set_quota(name, **changes))


@main.group()
def key() -> None:
    """API keys: shown once at creation, stored hashed."""


@key.command("create")
@click.argument("project_name")
@click.option("--user", required=True)
@click.option("--name", default="default")
@click.option("--rpm", type=int, default=None)
@click.option("--tpm", type=int, default=None)
@click.pass_context
def key_create(ctx: click.Context, project_name: str, user: str, name: str, rpm: int | None,
               tpm: int | None) -> None:
    _echo(_tenancy(ctx).create_key(project_name, user, name, rpm, tpm))


@key.command("rotate")
@click.argument("key_id", type=int)
@click.pass_context
def key_rotate(ctx: click.Context, key_id: int) -> None:
    _echo(_tenancy(ctx).rotate_key(key_id))


@key.command("revoke")
@click.argument("key_id", type=int)
@click.pass_context
def key_revoke(ctx: click.Context, key_id: int) -> None:
    _echo(_tenancy(ctx).revoke_key(key_id))


@key.command("list")
@click.argument("project_name")
@click.pass_context
def key_list(ctx: click.Context, project_name: str) -> None:
    _echo(_tenancy(ctx).list_keys(project_name))


@main.command()
@click.option("--project", "project_name", default=None)
@click.option("--day", default=None, help="YYYY-MM-DD")
@click.pass_context
def usage(ctx: click.Context, project_name: str | None, day: str | None) -> None:
    """Requests and tokens per day, project and key."""
    _echo(_tenancy(ctx).usage(project_name, day))


@main.group()
def db() -> None:
    """The gateway database's schema: Alembic migrations (docs/operations.md)."""


def _engine(ctx: click.Context):  # type: ignore[no-untyped-def]
    """The database as it is: these commands must not upgrade it on opening."""
    from gateway.db import connect

    return connect(_settings(ctx).database_url)


@db.command("upgrade")
@click.argument("revision", default="head")
@click.option("--sql", is_flag=True, help="print the SQL for the URL's dialect, run nothing "
                                          "(a range such as 0002:head from a known revision)")
@click.pass_context
def db_upgrade(ctx: click.Context, revision: str, sql: bool) -> None:
    """Upgrade to REVISION (default: head); a database made before migrations is stamped with
    the revision its tables match first."""
    from gateway import migrate

    if sql:
        migrate.render_sql(_settings(ctx).database_url, revision)
        return
    before, after = migrate.upgrade(_engine(ctx), revision)
    _echo({"before": before, "after": after})


@db.command("downgrade", context_settings={"ignore_unknown_options": True})  # `-1`
@click.argument("revision")
@click.option("--sql", is_flag=True, help="print the SQL (REVISION a range such as 0003:0002)")
@click.pass_context
def db_downgrade(ctx: click.Context, revision: str, sql: bool) -> None:
    """Downgrade to REVISION (`-1` for one step, `base` drops every gateway table)."""
    from gateway import migrate

    if sql:
        migrate.render_sql(_settings(ctx).database_url, revision, downgrading=True)
        return
    before, after = migrate.downgrade(_engine(ctx), revision)
    _echo({"before": before, "after": after})


@db.command("current")
@click.pass_context
def db_current(ctx: click.Context) -> None:
    """The database's revision and this code's head (null: empty, or made before migrations)."""
    from gateway import migrate

    with _engine(ctx).connect() as connection:
        _echo({"current": migrate.current(connection), "head": migrate.head(),
               "made_before_migrations": migrate.legacy_revision(connection)})


@db.command("check")
@click.pass_context
def db_check(ctx: click.Context) -> None:
    """Exit 1 unless the database is at head and its tables match the models."""
    from gateway import migrate
    from gateway.db import Base

    engine = _engine(ctx)
    with engine.connect() as connection:
        revision = migrate.current(connection)
    differences = [migrate.describe(d) for d in migrate.differences(engine, Base.metadata)]
    _echo({"current": revision, "head": migrate.head(), "differences": differences})
    if revision != migrate.head() or differences:
        ctx.exit(1)


@db.command("revision")
@click.argument("message")
def db_revision(message: str) -> None:
    """For developers: write the next revision from the models' difference to head (review it
    before committing)."""
    import tempfile

    from gateway import migrate
    from gateway.db import connect

    with tempfile.TemporaryDirectory() as scratch:
        path = migrate.new_revision(message, connect(f"sqlite:///{scratch}/head.db"))
    _echo({"written": path})


if __name__ == "__main__":
    main()
