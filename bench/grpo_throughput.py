"""GRPO throughput through the adapter asset (Axolotl via Dagster Pipes) vs a bare TRL
GRPOTrainer script on the same model, prompts, reward function, groups and lengths, in one run.

    .venvs/factory/bin/python -m bench.grpo_throughput [--steps 10] [--model smollm2]

Prints each side's samples (sampled replies) per second of its train loop, their ratio (goal
>= 0.9), how much of the loop went to sampling replies (worker/grpo_timing.py on both sides)
and the mean reply length (sampling time grows with it, so a ratio is read beside it).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from pathlib import Path

import yaml

from bench.graph_runs import trained_adapter
from bench.training_throughput import MODELS
from config.loading import load_config
from pipelines.graph import REPO_ROOT, resources_for

BATCH, GROUPS, LENGTH, LR, RANK = 8, 4, 64, 1e-4, 16


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--model", choices=sorted(MODELS), default="smollm2")
    args = parser.parse_args()
    graders = [{"type": "metric", "metric": "exact_match", "answer_pattern": r"(-?\d+)\D*$",
                "weight": 1.0}]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "factory.yaml").write_text(yaml.safe_dump({
            "storage": {"object_store": "file://store", "work_dir": "work"},
            "tracking": {"wandb": False},
            "base_models": {"base": MODELS[args.model]},
            "datasets": {"math": {"sources": [{"generator": "math_word_problems", "rows": 400}],
                                  "base_model": "base", "split": {"val": 0.0, "test": 0.1}}},
            "adapters": {"rl": {
                "base_model": "base", "dataset": "math", "objective": "grpo",
                "lora": {"r": RANK, "alpha": 2 * RANK},
                "grpo": {"graders": graders, "num_generations": GROUPS,
                         "max_completion_length": LENGTH},
                "training": {"max_steps": args.steps, "micro_batch_size": BATCH,
                             "learning_rate": LR, "sequence_len": 256, "warmup_steps": 0}}},
        }))
        config = load_config(root / "factory.yaml")
        ours = trained_adapter(config, "base", "math", "rl")
        store = resources_for(config)["store"]
        model = store.local_dir(store.read_ref("base_model/base")["prefix"])
        data = store.local_dir(store.read_ref("dataset/math")["prefix"]) / "train.jsonl"
        (root / "graders.json").write_text(json.dumps(graders))
        out = root / "trl.json"
        subprocess.run([str(REPO_ROOT / ".venvs" / "train" / "bin" / "python"),
                        str(REPO_ROOT / "bench" / "trl_grpo_baseline.py"), str(model), str(data),
                        str(out), str(root / "graders.json"), str(args.steps), str(BATCH),
                        str(GROUPS), str(LENGTH), str(LR), str(RANK), str(2 * RANK)],
                       check=True, cwd=REPO_ROOT, env={
                           "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1",
                           "HF_DATASETS_OFFLINE": "1", "PATH": "/usr/bin:/bin",
                           "PYTHONPATH": str(REPO_ROOT)})
        trl = json.loads(out.read_text())

    samples = args.steps * BATCH
    rates = {"asset": samples / ours["train_runtime_s"], "TRL": samples / trl["train_runtime"]}
    shares = {"asset": ours["generation_seconds"] / ours["train_runtime_s"],
              "TRL": trl["generation_seconds"] / trl["train_runtime"]}
    lengths = {"asset": ours["mean_completion_length"],
               "TRL": sum(trl["completion_length"]) / len(trl["completion_length"])}
    print(f"{args.model}, {args.steps} steps of {BATCH // GROUPS} prompts x {GROUPS} replies "
          f"(up to {LENGTH} tokens), LoRA r={RANK} on every linear layer, CPU")
    for side in ("asset", "TRL"):
        runtime = ours["train_runtime_s"] if side == "asset" else trl["train_runtime"]
        print(f"  {side:5}: {rates[side]:.2f} samples/s ({runtime:.1f} s), sampling "
              f"{shares[side]:.0%} of it, update and scoring {1 - shares[side]:.0%}; mean reply "
              f"{lengths[side]:.1f} tokens")
    print(f"ratio asset / TRL: {rates['asset'] / rates['TRL']:.2f} (goal >= 0.9)")


if __name__ == "__main__":
    main()
