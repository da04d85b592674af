"""The installed distributions a real Axolotl training imports, for the GPU bundle: run in the
training environment on a tiny model, as `python -m bench.gpu.trace_imports OUT.json CONFIG.yaml
[module ...]`, with the worker's own command line (`worker.seeded_axolotl train`). The named
modules are imported after the run: what the GPU path loads that a CPU run does not
(bitsandbytes for QLoRA). Writes {distribution: version}."""

from __future__ import annotations

import importlib
import json
import runpy
import sys
from importlib.metadata import packages_distributions, version
from pathlib import Path


def main() -> None:
    out, config, *gpu_only = sys.argv[1:]
    sys.argv = ["worker.seeded_axolotl", "train", config, "--launcher", "python"]
    try:
        runpy.run_module("worker.seeded_axolotl", run_name="__main__")
    except SystemExit as exc:  # click's standalone mode ends every run with one
        if exc.code not in (0, None):
            raise
    for module in gpu_only:
        importlib.import_module(module)
    tops = {name.split(".")[0] for name in list(sys.modules)}
    owners = packages_distributions()
    found = {dist for top in tops for dist in owners.get(top, [])}
    Path(out).write_text(json.dumps({d: version(d) for d in sorted(found)}, indent=1))


if __name__ == "__main__":
    main()
