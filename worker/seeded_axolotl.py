"""`axolotl` with every random draw coming from the config's `seed`.

Axolotl creates the LoRA matrices while it loads the model, before Hugging Face's Trainer calls
`set_seed`, so each run started them from a different random state: one recipe on one dataset
trained different adapters (two demos on bit-identical base models scored exact match 0.61 and
0.65). Seeding first makes a retrain give the same bytes.

It also validates the config with Axolotl's schema first, in this process: a second interpreter
just to validate paid Axolotl's import again (8 of the 25 seconds an adapter step spent outside
its train loop). A rejected config exits with INVALID_CONFIG before any model is loaded, its
problems written as JSON to $FACTORY_AXOLOTL_PROBLEMS when that is set.

Start-up is dominated by importing torch, transformers and Axolotl (millions of long-lived
objects), and Axolotl and the Trainer call `gc.collect()` several times while loading, each one
walking all of them: 1.7 of the 11 seconds this process spent outside its train loop. The
collector is off while the imports run, and what they built is frozen out of its scans
(`gc.freeze`, as forking servers do) until Axolotl returns; garbage made meanwhile is collected
as usual. A config's `dataset_num_proc: 0` (tokenise in this process) is made Axolotl's default
too, because its save step reads a 0 as "use the default".

Usage, as `axolotl`: `python -m worker.seeded_axolotl train CONFIG.yaml [axolotl options]`.
"""

from __future__ import annotations

import gc
import json
import os
import sys
from pathlib import Path

import yaml

DEFAULT_SEED = 42  # the Trainer's own default when a config names none
PROBLEMS_ENV = "FACTORY_AXOLOTL_PROBLEMS"
INVALID_CONFIG = 3


def seed_of(config: dict) -> int:
    return int(config.get("seed", DEFAULT_SEED))


def in_process_datasets(config: dict) -> None:
    """Axolotl saves the tokenised dataset with `dataset_num_proc or <default count>` workers,
    so a 0 alone would still start a pool there."""
    if config.get("dataset_num_proc") == 0:
        os.environ["AXOLOTL_DATASET_NUM_PROC"] = "0"


def reject_if_invalid(config: dict) -> None:
    from worker.validate import problems_of

    problems = problems_of(config)
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
    config = yaml.safe_load(Path(sys.argv[2]).read_text()) or {}
    in_process_datasets(config)
    gc.disable()
    reject_if_invalid(config)
    from axolotl.cli.main import main as axolotl
    from transformers import set_seed

    gc.freeze()
    gc.enable()
    set_seed(seed_of(config))
    if config.get("rl") == "grpo":
        from worker import grpo_timing

        grpo_timing.install()
    sys.argv = ["axolotl", *sys.argv[1:]]
    try:
        axolotl()
    finally:
        # frozen objects are never freed at exit: triton's bindings (nanobind) would then report
        # hundreds of "leaked" objects, burying the error a failed run ends with. Freeing them
        # costs 2 s of the process's exit.
        gc.unfreeze()


if __name__ == "__main__":
    main()
