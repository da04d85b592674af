"""SFT, then GRPO, on the demo's math task with SmolLM2, through the asset graph: what issue #45's
figure is made of. The demo's recipe trains `math-lora` (SFT) and its evaluation promotes it;
two GRPO adapters (seeds 1 and 2) start from that champion, rewarded by the evaluation's own
scorer (exact match on the last number of the reply), and each one's evaluation scores the base,
the GRPO candidate and the SFT champion it must beat on the same held-out rows.

    .venvs/factory/bin/python -m bench.grpo_math [--folder .factory-bench/grpo-math]
        [--steps 30] [--seeds 1 2]

Prints one row per seed (exact match of base, SFT and GRPO on the held-out rows, the reward's
first and last steps, the gate's verdict) and the step time. Rerunning reuses what the folder's
store already holds (Dagster's versions): only what changed trains again.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import dagster as dg
import yaml

from config.loading import load_config
from pipelines.graph import REPO_ROOT, resources_for
from pipelines.runs import materialize

PATTERN = r"(-?\d+)\D*$"  # the demo's math-eval answer pattern: the reply's last number


def project(folder: Path, steps: int, seeds: list[int], learning_rate: float) -> Path:
    demo = yaml.safe_load((REPO_ROOT / "factory.yaml").read_text())
    evaluation = {"adapter": "math-lora", "answer_pattern": PATTERN, "limit": 100,
                  "max_new_tokens": 64,
                  "promotion": {"primary": "exact_match", "margin": 0.0, "guards": {}}}
    raw = {
        "storage": {"object_store": "file://store", "work_dir": "work"},
        "tracking": {"wandb": False},
        "base_models": {"smollm2": demo["base_models"]["smollm2"]},
        "datasets": {"math-word-problems": demo["datasets"]["math-word-problems"]},
        "adapters": {"math-lora": demo["adapters"]["math-lora"]},
        "evaluations": {"math-eval": evaluation},
    }
    for seed in seeds:
        raw["adapters"][f"math-rl-{seed}"] = {
            "base_model": "smollm2", "dataset": "math-word-problems", "objective": "grpo",
            "lora": demo["adapters"]["math-lora"]["lora"],
            "grpo": {"start_from": "math-lora", "num_generations": 4,
                     "max_completion_length": 64, "temperature": 1.0},
            "training": {"max_steps": steps, "micro_batch_size": 8,
                         "learning_rate": learning_rate, "sequence_len": 256,
                         "warmup_steps": 0, "seed": seed}}
        raw["evaluations"][f"math-rl-{seed}-eval"] = {**evaluation, "adapter": f"math-rl-{seed}"}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "factory.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return folder / "factory.yaml"


def latest(asset: str) -> dict[str, Any]:
    """The asset's last materialization's metadata (the instance `materialize` used)."""
    with dg.DagsterInstance.get() as instance:
        event = instance.get_latest_materialization_event(dg.AssetKey(asset.split("/")))
    assert event is not None and event.asset_materialization is not None, asset
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--folder", type=Path, default=REPO_ROOT / ".factory-bench" / "grpo-math")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    args = parser.parse_args()
    path = project(args.folder.resolve(), args.steps, args.seeds, args.learning_rate)
    config = load_config(path)
    result = materialize(config)
    store = resources_for(config)["store"]
    print(f"SmolLM2-135M-Instruct, demo math task, {args.steps} GRPO steps of 2 prompts x 4 "
          f"replies, learning rate {args.learning_rate:g}; exact match on 100 held-out rows")
    print("| seed | base | SFT (math-lora) | GRPO | reward first -> last | s/step | gate |")
    print("|---|---|---|---|---|---|---|")
    for seed in args.seeds:
        report = json.loads((store.local_dir(store.read_ref(
            f"evaluation/math-rl-{seed}-eval")["prefix"]) / "report.json").read_text())
        scores = {m: report["results"][m]["exact_match"] for m in report["results"]
                  if isinstance(report["results"][m], dict) and "exact_match" in
                  report["results"][m]}
        adapter = latest(f"adapter/math-rl-{seed}")
        per_step = adapter["train_runtime_s"] / adapter["steps"]
        print(f"| {seed} | {scores.get('base', float('nan')):.2f} | "
              f"{scores.get('champion', float('nan')):.2f} | "
              f"{scores.get('candidate', float('nan')):.2f} | "
              f"{adapter.get('first_reward')} -> {adapter.get('final_reward')} | "
              f"{per_step:.1f} | {report['decision']['passed']} "
              f"(vs {report['champion']}) |")
    print("run succeeded:", result.success)  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
