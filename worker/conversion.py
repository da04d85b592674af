"""The Pipes entry point every base-model conversion job shares (worker/convert_*.py).

`mode: convert` writes the Hugging Face folder under `output_dir` and reports the source's
facts; a source the job refuses (its own exception type, whose message names the file) is
reported as `{"error": ...}` for the asset to fail with, not a traceback. `mode: verify` reports
`{"problems": [...], ...}` for the base model's `reproduces_source` check.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from worker.pipes import open_pipes

Convert = Callable[[dict[str, Any], Path, Any], dict[str, Any]]
Verify = Callable[[dict[str, Any], Any], dict[str, Any]]


def run(convert: Convert, verify: Verify, refused: type[Exception]) -> None:
    with open_pipes() as pipes:
        params = pipes.extras
        if params["mode"] == "verify":
            pipes.report_custom_message(verify(params, pipes))
            return
        out = Path(params["output_dir"])
        out.mkdir(parents=True, exist_ok=True)
        try:
            summary = convert(params, out, pipes)
        except refused as exc:
            summary = {"error": str(exc)}
        pipes.report_custom_message(summary)
