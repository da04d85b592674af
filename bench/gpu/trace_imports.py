"""What a real Axolotl training loads, for the GPU bundle: run in the training environment on a
tiny model, as `python -m bench.gpu.trace_imports OUT.json CONFIG.yaml [module ...]`, with the
worker's own command line (`worker.seeded_axolotl train`). The named modules are imported after
the run: what the GPU path loads that a CPU run does not (bitsandbytes for QLoRA). Writes
{"distributions": {distribution: version}, "binaries": [shared libraries the process had
mapped at the end, as paths under site-packages]}: the bundle ships only those of a package's
compiled files, which keeps unused ones (pyarrow's Flight and S3 libraries, most of SciPy) off
the device call."""

from __future__ import annotations

import importlib
import json
import runpy
import site
import sys
from importlib.metadata import packages_distributions, version
from pathlib import Path


def mapped_binaries() -> list[str]:
    """Shared libraries mapped now (/proc/self/maps), relative to site-packages."""
    roots = [Path(p).resolve() for p in site.getsitepackages()]
    found = set()
    for line in Path("/proc/self/maps").read_text().splitlines():
        path = Path(line.split(maxsplit=5)[-1]) if line.count(" ") >= 5 else None
        if path is None or ".so" not in path.name:
            continue
        for root in roots:
            if path.is_relative_to(root):
                found.add(str(path.relative_to(root)))
    return sorted(found)


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
    Path(out).write_text(json.dumps({"distributions": {d: version(d) for d in sorted(found)},
                                     "binaries": mapped_binaries()}, indent=1))


if __name__ == "__main__":
    main()
