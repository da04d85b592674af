"""Where worker jobs run. Local subprocess in the worker environment by default, via Dagster Pipes.

The worker modules speak only dagster-pipes, so a remote machine (compute/: EC2, Compute Engine,
Kubernetes) swaps the Pipes client and the message channel, not the worker code.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import dagster as dg
from dagster_pipes import PipesDefaultMessageWriter
from pydantic import Field


class WholeLineMessageReader(dg.PipesMessageReader):
    """Pipes messages from a temp file, one JSON line each, taken only once their newline is
    there. Dagster's file reader tails with readline(), which hands over half a line when it
    reads while the writer's append crosses a page boundary; the JSON error then ends its reader
    thread and every later message (logs, the job's result) is lost to the step."""

    @contextmanager
    def read_messages(self, handler: Any) -> Iterator[dict[str, Any]]:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "messages.jsonl"
            path.touch()
            ended = threading.Event()
            reader = threading.Thread(target=self._read, args=(path, handler, ended),
                                      daemon=True)
            reader.start()
            try:
                yield {PipesDefaultMessageWriter.FILE_PATH_KEY: str(path)}
            finally:
                ended.set()
                reader.join()

    @staticmethod
    def _read(path: Path, handler: Any, ended: threading.Event) -> None:
        try:
            with path.open(encoding="utf-8") as stream:
                pending = ""
                while True:
                    if chunk := stream.readline():
                        pending += chunk
                        if pending.endswith("\n"):
                            handler.handle_message(json.loads(pending))
                            pending = ""
                    elif ended.is_set():
                        break
                    else:
                        time.sleep(0.01)
                if pending:
                    raise ValueError(f"the job's last Pipes message was cut short: {pending!r}")
        except Exception:
            handler.report_pipes_framework_exception("WholeLineMessageReader", sys.exc_info())
            raise

    def no_messages_debug_text(self) -> str:
        return "Attempted to read messages from a local temporary file (WholeLineMessageReader)."


class WorkerCompute(dg.ConfigurableResource):
    """Runs `python -m worker.<job>` in the worker (Axolotl + lm-eval) environment."""

    launches_a_machine: ClassVar[bool] = False  # RemoteCompute: each job starts a box

    python: str = ".venvs/train/bin/python"
    project_root: str = "."
    target: str = "cpu"
    # compute.kernel_env: pinned CPU kernels (compute/kernels.py)
    kernel_env: dict[str, str] = Field(default_factory=dict)

    def job_env(self) -> dict[str, str]:
        """The environment of every job this resource starts (secrets aside)."""
        root = Path(self.project_root).resolve()
        return {
            "PYTHONPATH": str(root),
            "CUDA_VISIBLE_DEVICES": "" if self.target == "cpu" else os.environ.get(
                "CUDA_VISIBLE_DEVICES", ""),
            "PATH": os.environ.get("PATH", ""),
            "HOME": os.environ.get("HOME", str(root)),
            "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"),
            "HF_DATASETS_OFFLINE": os.environ.get("HF_DATASETS_OFFLINE", "1"),
            **self.kernel_env,
        }

    def run(self, context: dg.AssetExecutionContext, job: str, extras: dict[str, Any],
            inputs: Sequence[Path] = (), outputs: Sequence[Path] = (),
            secrets: Mapping[str, str] | None = None) -> list[Any]:
        """Run one worker job to completion; returns the messages it reported. `inputs` and
        `outputs` are the paths the job reads and writes: a local job sees them in place, a
        remote launcher moves them (resources/remote_compute.py). `secrets` reach the job as
        environment variables only, never in its extras (which Pipes writes to a file)."""
        root = Path(self.project_root).resolve()
        python = (root / self.python) if not Path(self.python).is_absolute() else Path(self.python)
        if not python.exists():
            raise FileNotFoundError(
                f"worker environment missing: {python}; run `make setup` (infra/setup-envs.sh)"
            )
        env = {**self.job_env(), **(secrets or {})}
        invocation = dg.PipesSubprocessClient(
            cwd=str(root), message_reader=WholeLineMessageReader()).run(
            context=context,
            command=[str(python), "-m", f"worker.{job}"],
            extras=extras,
            env=env,
        )
        return list(invocation.get_custom_messages())
