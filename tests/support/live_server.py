"""A gateway app served by uvicorn on 127.0.0.1 in a thread, for tests that need real HTTP
(streams, disconnects, several clients)."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import uvicorn
from fastapi import FastAPI

from config.gateway import GatewaySettings
from gateway.app import create_app
from gateway.serving import Gateway
from gateway.studio.service import Studio


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(settings: GatewaySettings, gateway: Gateway | None = None,
          studio: Studio | None = None) -> Iterator[tuple[str, Gateway]]:
    """Yields (url, gateway) once the server accepts connections; stops it when resumed."""
    app: FastAPI = create_app(settings, gateway, studio)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("gateway did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", app.state.gateway
    finally:
        server.should_exit = True
        thread.join(10)


def wait_until_up(url: str, proc: subprocess.Popen, log: Path, timeout_s: float) -> None:
    """Until `url` answers 2xx; fails with the log's tail if the process exits or time runs
    out (a test must never race a starting service)."""
    deadline = time.monotonic() + timeout_s
    while True:
        assert proc.poll() is None, f"exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
        try:
            if httpx.get(url, timeout=2).is_success:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"{url} not up after {timeout_s:.0f}s:\n" + (
            log.read_text()[-3000:])
        time.sleep(0.5)
