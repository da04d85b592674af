"""`axolotl` with every random draw coming from the config's `seed`.

Axolotl creates the LoRA matrices while it loads the model, before Hugging Face's Trainer calls
`set_seed`, so each run started them from a different random state: one recipe on one dataset
trained different adapters (two demos on bit-identical base models scored exact match 0.61 and
0.65). Seeding first makes a retrain give the same bytes.

It also validates the config with Axolotl's schema first, in this process: a second interpreter
just to validate paid Axolotl's import again (8 of the 25 seconds an adapter step spent outside
its train loop). A rejected config exits with INVALID_CONFIG before any model is loaded, its
problems written as JSON to $FACTORY_AXOLOTL_PROBLEMS when that is set.

Usage, as `axolotl`: `python -m worker.seeded_axolotl train CONFIG.yaml [axolotl options]`.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import yaml

DEFAULT_SEED = 42  # the Trainer's own default when a config names none
PROBLEMS_ENV = "FACTORY_AXOLOTL_PROBLEMS"
INVALID_CONFIG = 3


def seed_of(config_path: Path) -> int:
    return int((yaml.safe_load(config_path.read_text()) or {}).get("seed", DEFAULT_SEED))


def reject_if_invalid(config_path: Path) -> None:
    from worker.validate import problems_of

    problems = problems_of(yaml.safe_load(config_path.read_text()))
    if not problems:
        return
    if os.environ.get(PROBLEMS_ENV):
        Path(os.environ[PROBLEMS_ENV]).write_text(json.dumps(problems))
    for problem in problems:
        print(f"axolotl rejects {problem['key'] or '(config)'}: {problem['message']}",
              file=sys.stderr)
    raise SystemExit(INVALID_CONFIG)


def main() -> None:
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    reject_if_invalid(Path(sys.argv[2]))
    from axolotl.cli.main import main as axolotl
    from transformers import set_seed

    set_seed(seed_of(Path(sys.argv[2])))
    sys.argv = ["axolotl", *sys.argv[1:]]
    axolotl()


if __name__ == "__main__":
    main()
