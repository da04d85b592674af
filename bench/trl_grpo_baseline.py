"""The bare baseline for bench.grpo_throughput: TRL's GRPOTrainer with LoRA on the same model,
prompts, reward functions, groups and lengths as the adapter asset. Runs in the worker
environment (TRL is there), with worker/grpo_timing.py installed as in the asset's process so
both sides report the same generation / update split:

    .venvs/train/bin/python bench/trl_grpo_baseline.py <model_dir> <train.jsonl> <out.json> \
        <graders.json> <max_steps> <batch> <generations> <completion_len> <lr> <r> <alpha>
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

started = time.monotonic()

from datasets import load_dataset  # noqa: E402 - the imports are part of the start-up measured
from peft import LoraConfig  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402
from trl import GRPOConfig, GRPOTrainer  # noqa: E402

from worker import grpo_timing, rewards  # noqa: E402


def main() -> None:
    model_dir, data, out, graders, steps, batch, groups, length, lr, r, alpha = sys.argv[1:12]
    grpo_timing.install()
    declared = json.loads(Path(graders).read_text())
    rows = load_dataset("json", data_files=data, split="train").map(
        lambda row: {"prompt": row["messages"][:-1], "reference": row["messages"][-1]["content"],
                     "graders": json.dumps(declared)}, remove_columns=["messages"])
    trainer = GRPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(model_dir),
        processing_class=AutoTokenizer.from_pretrained(model_dir),
        reward_funcs=[getattr(rewards, f"grader_{i}") for i in range(len(declared))],
        train_dataset=rows,
        peft_config=LoraConfig(r=int(r), lora_alpha=int(alpha), target_modules="all-linear",
                               task_type="CAUSAL_LM"),
        args=GRPOConfig(output_dir=out + ".trainer", max_steps=int(steps),
                        per_device_train_batch_size=int(batch), num_generations=int(groups),
                        max_completion_length=int(length), temperature=1.0, beta=0.04,
                        reward_weights=[g["weight"] for g in declared],
                        learning_rate=float(lr), logging_steps=1, save_strategy="no",
                        report_to="none", use_cpu=True, seed=0))
    result = trainer.train()
    history = trainer.state.log_history
    with open(out, "w") as f:
        json.dump({"train_runtime": result.metrics["train_runtime"],
                   "generation_seconds": sum(h.get("generation_seconds", 0) for h in history),
                   "completion_length": [h["completions/mean_length"] for h in history
                                         if "completions/mean_length" in h],
                   "wall_seconds": time.monotonic() - started}, f)


if __name__ == "__main__":
    main()
