"""Where worker jobs run. Local subprocess in the worker environment by default, via Dagster Pipes.

The worker modules speak only dagster-pipes, so a remote machine (compute/: EC2, Compute Engine,
Kubernetes) swaps the Pipes client and the message channel, not the worker code.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dagster as dg


class WorkerCompute(dg.ConfigurableResource):
    """Runs `python -m worker.<job>` in the worker (Axolotl + lm-eval) environment."""

    python: str = ".venvs/train/bin/python"
    project_root: str = "."
    target: str = "cpu"

    def run(self, context: dg.AssetExecutionContext, job: str, extras: dict[str, Any],
            inputs: Sequence[Path] = (), outputs: Sequence[Path] = ()) -> list[Any]:
        """Run one worker job to completion; returns the messages it reported. `inputs` and
        `outputs` are the paths the job reads and writes: a local job sees them in place, a
        remote launcher moves them (resources/remote_compute.py)."""
        root = Path(self.project_root).resolve()
        python = (root / self.python) if not Path(self.python).is_absolute() else Path(self.python)
        if not python.exists():
            raise FileNotFoundError(
                f"worker environment missing: {python}; run `make setup` (infra/setup-envs.sh)"
            )
        env = {
            "PYTHONPATH": str(root),
            "CUDA_VISIBLE_DEVICES": "" if self.target == "cpu" else os.environ.get(
                "CUDA_VISIBLE_DEVICES", ""),
            "PATH": os.environ.get("PATH", ""),
            "HOME": os.environ.get("HOME", str(root)),
            "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"),
            "HF_DATASETS_OFFLINE": os.environ.get("HF_DATASETS_OFFLINE", "1"),
        }
        invocation = dg.PipesSubprocessClient(cwd=str(root)).run(
            context=context,
            command=[str(python), "-m", f"worker.{job}"],
            extras=extras,
            env=env,
        )
        return list(invocation.get_custom_messages())
