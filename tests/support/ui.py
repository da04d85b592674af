"""Dagster's webserver and daemon for a test project (`factory ui`), started and stopped as a user
would."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path


def start_ui(root: Path, port: int) -> subprocess.Popen:
    return subprocess.Popen(
        [str(Path(sys.executable).with_name("factory")), "ui", "--config",
         str(root / "factory.yaml"), "--port", str(port)],
        cwd=root, start_new_session=True, stdout=subprocess.DEVNULL,
        env={**os.environ, "DAGSTER_HOME": str(root / "work" / "dagster_home")},
        stderr=open(root / "dagster.log", "ab"),
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def stop_ui(ui: subprocess.Popen) -> None:
    """As Ctrl-C would; killed if it does not stop within a minute."""
    os.killpg(ui.pid, signal.SIGINT)
    try:
        ui.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(ui.pid, signal.SIGKILL)
