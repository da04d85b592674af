"""Recipe (factory.yaml) -> Axolotl YAML. One renderer for pre-training and LoRA SFT.

What differs per compute target stays in `compute_keys`; a recipe's raw `axolotl:` keys win over
everything, so users are never blocked by what our schema does not model yet.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from pipelines.config import AdapterSpec, Pretrain

# The fused LoRA kernels allocate on CUDA and mixed precision needs a GPU.
CPU_KEYS: dict[str, Any] = {
    "bf16": False, "fp16": False, "tf32": False,
    "lora_mlp_kernel": False, "lora_qkv_kernel": False, "lora_o_kernel": False,
}
GPU_KEYS: dict[str, Any] = {"bf16": "auto", "tf32": True}


def compute_keys(target: str) -> dict[str, Any]:
    return dict(CPU_KEYS if target == "cpu" else GPU_KEYS)


def _common(base_dir: Path, output_dir: Path, seed: int, target: str) -> dict[str, Any]:
    return {
        "base_model": str(base_dir),
        "output_dir": str(output_dir),
        "dataset_prepared_path": str(output_dir / "prepared"),
        "seed": seed,
        "optimizer": "adamw_torch",
        "sample_packing": False,
        "logging_steps": 5,
        "save_strategy": "steps",
        "save_total_limit": 1,
        "val_set_size": 0,
        "report_to": "none",
        "use_wandb": False,
        **compute_keys(target),
    }


def render_sft(spec: AdapterSpec, base_dir: Path, train_path: Path, output_dir: Path,
               target: str = "cpu") -> str:
    t = spec.training
    cfg = _common(base_dir, output_dir, t.seed, target) | {
        "chat_template": "tokenizer_default",
        "datasets": [{
            "path": str(train_path), "ds_type": "json", "type": "chat_template",
            "field_messages": "messages", "roles_to_train": ["assistant"],
        }],
        "adapter": "lora",
        "lora_r": spec.lora.r,
        "lora_alpha": spec.lora.alpha,
        "lora_dropout": spec.lora.dropout,
        "sequence_len": t.sequence_len,
        "micro_batch_size": t.micro_batch_size,
        "gradient_accumulation_steps": t.gradient_accumulation_steps,
        "max_steps": t.max_steps,
        "num_epochs": 1000,  # max_steps decides; epochs only bound it
        "learning_rate": t.learning_rate,
        "lr_scheduler": t.lr_scheduler,
        "warmup_steps": t.warmup_steps,
        "save_steps": t.max_steps,
    }
    if spec.lora.target_modules:
        cfg["lora_target_modules"] = list(spec.lora.target_modules)
    else:
        cfg["lora_target_linear"] = True
    return yaml.safe_dump(cfg | spec.axolotl, sort_keys=False)


def render_pretrain(spec: Pretrain, seed: int, init_dir: Path, text_path: Path,
                    output_dir: Path, target: str = "cpu") -> str:
    cfg = _common(init_dir, output_dir, seed, target) | {
        "datasets": [{"path": str(text_path), "ds_type": "json", "type": "completion",
                      "field": "text"}],
        "sequence_len": spec.sequence_len,
        "micro_batch_size": spec.micro_batch_size,
        "gradient_accumulation_steps": 1,
        "max_steps": spec.steps,
        "num_epochs": 1000,
        "learning_rate": spec.learning_rate,
        "lr_scheduler": "cosine",
        "warmup_steps": min(20, spec.steps // 10),
        "save_steps": spec.steps,
    }
    return yaml.safe_dump(cfg, sort_keys=False)
