"""Validate a rendered Axolotl YAML with Axolotl's own schema, before any compute is launched.

As a Pipes job: reports `{"problems": [{"key", "message"}]}` (empty when valid); the control plane
maps each Axolotl key back to the factory.yaml key it came from. `gpu` (GpuBox.capabilities())
validates as for that box, on a machine without it.

By hand or from the GPU benchmark's dry run, without Dagster:
    python -m worker.validate axolotl.yaml [more.yaml] [--gpu '{"n_gpu": 8, ...}']
prints {file: problems} as JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import yaml

from worker.pipes import open_pipes


def problems_of(config: dict, gpu: dict[str, Any] | None = None) -> list[dict[str, str]]:
    from axolotl.utils.config import prepare_plugins, validate_config
    from axolotl.utils.dict import DictDefault
    from pydantic import ValidationError

    cfg = DictDefault(config)
    try:
        if cfg.get("plugins"):
            prepare_plugins(cfg)  # a plugin's keys (Liger's) are checked only once it is known
        if gpu is None:
            validate_config(cfg)
        else:
            import torch

            validate_config(cfg, gpu, {"torch_version": torch.__version__.split("+")[0]})
    except ValidationError as exc:
        return [{"key": ".".join(str(part) for part in error["loc"]), "message": error["msg"]}
                for error in exc.errors()]
    except (ValueError, ImportError) as exc:  # cross-field checks raise plain ValueErrors too
        return [{"key": "", "message": str(exc)}]
    return []


def main() -> None:
    with open_pipes() as pipes:
        problems = problems_of(yaml.safe_load(pipes.extras["axolotl_yaml"]),
                               pipes.extras.get("gpu"))
        for problem in problems:
            pipes.log.warning(f"axolotl: {problem['key'] or '(config)'}: {problem['message']}")
        pipes.report_custom_message({"problems": problems})


def by_hand() -> None:
    parser = argparse.ArgumentParser(description="Axolotl's validation of rendered YAML files")
    parser.add_argument("files", nargs="+")
    parser.add_argument("--gpu", type=json.loads, default=None,
                        help="capabilities as compute.gpus.GpuBox.capabilities() gives them")
    args = parser.parse_args()
    print(json.dumps({path: problems_of(yaml.safe_load(Path(path).read_text()), args.gpu)
                      for path in args.files}))


if __name__ == "__main__":
    import sys

    if len(sys.argv) > 1:
        by_hand()
    else:
        main()
