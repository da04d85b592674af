"""The bare baseline for bench.training_throughput: TRL's SFTTrainer with LoRA on the same model,
rows and hyperparameters as the adapter asset. Runs in the worker environment (TRL is there):

    .venvs/train/bin/python bench/trl_sft_baseline.py <model_dir> <train.jsonl> <out.json> \
        <max_steps> <batch> <seq_len> <lr> <r> <alpha> [<warmup_steps> gpu]

With `gpu` (bench/gpu_training.py on a lent GPU machine): bf16 on CUDA, and the peak of
torch.cuda.max_memory_allocated in the result.
"""

from __future__ import annotations

import json
import sys
import time

started = time.monotonic()

from datasets import load_dataset  # noqa: E402 - the imports are part of the start-up measured
from peft import LoraConfig  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402
from trl import SFTConfig, SFTTrainer  # noqa: E402


def gpu_peak_gib() -> float:
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**30, 2)


def main() -> None:
    model_dir, data, out, steps, batch, seq, lr, r, alpha = sys.argv[1:10]
    warmup = sys.argv[10] if len(sys.argv) > 10 else "10"
    gpu = sys.argv[11:12] == ["gpu"]
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir,
                                                 **({"dtype": "bfloat16"} if gpu else {}))
    rows = load_dataset("json", data_files=data, split="train").select_columns(["messages"])
    trainer = SFTTrainer(
        model=model, processing_class=tokenizer, train_dataset=rows,
        peft_config=LoraConfig(r=int(r), lora_alpha=int(alpha), target_modules="all-linear",
                               task_type="CAUSAL_LM"),
        args=SFTConfig(output_dir=out + ".trainer", max_steps=int(steps),
                       per_device_train_batch_size=int(batch), max_length=int(seq),
                       learning_rate=float(lr), lr_scheduler_type="cosine",
                       warmup_steps=int(warmup),
                       optim="adamw_torch", logging_steps=50, save_strategy="no",
                       report_to="none", use_cpu=not gpu, bf16=gpu, fp16=False, seed=0),
    )
    result = trainer.train()
    with open(out, "w") as f:
        json.dump({"train_runtime": result.metrics["train_runtime"],
                   "samples_per_second": result.metrics["train_samples_per_second"],
                   "gpu_peak_gib": gpu_peak_gib() if gpu else None,
                   "wall_seconds": time.monotonic() - started}, f)


if __name__ == "__main__":
    main()
