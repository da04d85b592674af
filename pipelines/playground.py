"""The demo's way into the playground: a `demo` project granted every model the deployments serve
and every corpus, a fresh key for it (the previous demo's key revoked), and the gateway running
in the background (left running like the vLLM servers; `factory stop` stops it)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from config.schema import FactoryConfig

PROJECT = "demo"


def provision(config: FactoryConfig) -> str:
    """Grants for the demo project (created once) and a new key, the earlier one revoked;
    returns the key's secret."""
    from gateway.db import make_engine, session_factory
    from gateway.tenancy import Tenancy

    s = config.gateway_settings
    tenancy = Tenancy(session_factory(make_engine(s.database_url)), s.default_rpm,
                      s.default_tpm, default_quota=s.project_quota)
    if not tenancy.has_project(PROJECT):  # else made by an earlier demo: grants refreshed below
        tenancy.create_project(PROJECT, owner=PROJECT)
    granted = {(g["kind"], g["name"]) for g in tenancy.grants(PROJECT)}
    models = {name for d in config.deployments.values() for name in (d.base_model, *d.adapters)}
    wanted = {("model", m) for m in models | {s.embedding_model_name}} | {
        ("collection", c) for c in config.corpora}
    for kind, name in sorted(wanted - granted):
        tenancy.grant(PROJECT, name, kind=kind)
    for key in tenancy.list_keys(PROJECT):  # one live demo key: reruns never pile keys up
        if not key["revoked"]:
            tenancy.revoke_key(key["id"])
    return tenancy.create_key(PROJECT, PROJECT, name=f"demo-{int(time.time())}")["key"]


def _pid_file(config: FactoryConfig) -> Path:
    return config.work_dir / "gateway.pid"


def start(config: FactoryConfig, port: int | None = None, timeout_s: float = 60) -> str:
    """The gateway's URL, starting it unless it already answers there (on `gateway.port`
    unless another port is given)."""
    s = config.gateway_settings
    port = port or s.port
    url = f"http://{s.host}:{port}"
    if _healthy(url):
        return url
    log = config.work_dir / "gateway.log"
    command = [str(Path(sys.executable).with_name("factory-gateway")), "--config",
               str(config.root / "factory.yaml"), "serve", "--port", str(port)]
    with log.open("ab") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True, cwd=config.root)
    _pid_file(config).write_text(str(process.pid))
    deadline = time.monotonic() + timeout_s
    while not _healthy(url):
        if process.poll() is not None or time.monotonic() > deadline:
            stop(config)
            tail = log.read_text(errors="replace").splitlines()[-15:]
            raise RuntimeError(f"the gateway did not start at {url}; {log}:\n" + "\n".join(tail))
        time.sleep(0.5)
    return url


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code in (200, 503)
    except httpx.HTTPError:
        return False


def stop(config: FactoryConfig) -> bool:
    """Stop the gateway the demo started; False when none was running."""
    pid_file = _pid_file(config)
    if not pid_file.is_file():
        return False
    pid = int(pid_file.read_text())
    pid_file.unlink()
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    os.killpg(pid, signal.SIGKILL)
    return True
