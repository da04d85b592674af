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


if __name__ == "__main__":
    main()
