"""Which of a run's `checkpoint-<step>` folders are finished, on the box and on the control plane.

The trainer writes a checkpoint's weights, optimizer and RNG state first and `trainer_state.json`
last, but it writes that file in place: a box that dies during the write leaves a folder whose
state file is empty or cut short. Axolotl's auto-resume takes the newest folder by name, and
resuming from a cut-short state crashes the retry, so a checkpoint counts only once its state file
parses and names the folder's own step; anything else is debris of a crash.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

STATE = "trainer_state.json"
STEP = re.compile(r"checkpoint-(\d+)$")


def step_of(name: str) -> int:
    match = STEP.search(name.rstrip("/"))
    return int(match.group(1)) if match else -1


def state_of(checkpoint: Path) -> dict[str, Any] | None:
    """The checkpoint's trainer state, or None while (or if) it is not completely written."""
    try:
        state = json.loads((checkpoint / STATE).read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(state, dict) or state.get("global_step") != step_of(checkpoint.name):
        return None
    return state


def folders(output_dir: Path) -> list[Path]:
    """Every `checkpoint-<step>` folder, finished or not, oldest first."""
    return sorted((p for p in output_dir.glob("checkpoint-*")
                   if p.is_dir() and step_of(p.name) >= 0), key=lambda p: step_of(p.name))


def finished(output_dir: Path) -> list[Path]:
    """The finished checkpoints, oldest first."""
    return [p for p in folders(output_dir) if state_of(p) is not None]


def remove_unfinished(output_dir: Path) -> list[str]:
    """Delete checkpoint folders a crash left half-written, before a run resumes; their names."""
    debris = [p for p in folders(output_dir) if state_of(p) is None]
    for path in debris:
        shutil.rmtree(path)
    return [p.name for p in debris]
