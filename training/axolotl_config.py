"""Recipe (factory.yaml) -> Axolotl YAML: base-model pre-training and adapters (LoRA, QLoRA or
full fine-tuning; every objective of config/objectives.py, with the rows reshaped first for the
trainers that read another layout).

What differs per compute target stays in `compute_keys`; a recipe's raw `axolotl:` keys win over
everything, so users are never blocked by what our schema does not model yet.
"""

from __future__ import annotations

import json
import os
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from config.adapters import AdapterSpec
from config.base_models import Pretrain
from config.objectives import OBJECTIVES
from config.training import LIGER_MODEL_TYPES, TrackingSpec
from worker.chat import turn_end

# The fused LoRA kernels allocate on CUDA and mixed precision needs a GPU. Axolotl pads batches
# to multiples of 64 for tensor cores; on a CPU that padding is only extra work. Worker processes
# only pay off beside a GPU: `dataset_num_proc: 0` tokenises and saves in the training process
# (datasets starts a pool for 1, and a fresh interpreter to save), and batches are collated in
# it too, as TRL does by default (Axolotl's GPU default forks a loader that pins memory).
CPU_KEYS: dict[str, Any] = {
    "bf16": False, "fp16": False, "tf32": False,
    "lora_mlp_kernel": False, "lora_qkv_kernel": False, "lora_o_kernel": False,
    "pad_to_multiple_of": 8, "dataset_num_proc": 0,
    "dataloader_num_workers": 0, "dataloader_pin_memory": False,
}
GPU_KEYS: dict[str, Any] = {"bf16": "auto", "tf32": True}
LIGER_KEYS: dict[str, Any] = {
    "plugins": ["axolotl.integrations.liger.LigerPlugin"], "liger_rope": True,
    "liger_rms_norm": True, "liger_glu_activation": True,
    "liger_fused_linear_cross_entropy": True}
# DeepSpeed ZeRO as Hugging Face's Trainer integration fills it in ("auto": from the recipe);
# inline, so the rendered YAML is all a training box needs
ZERO_COMMON: dict[str, Any] = {
    "bf16": {"enabled": "auto"}, "fp16": {"enabled": "auto"},
    "gradient_accumulation_steps": "auto", "gradient_clipping": "auto",
    "train_batch_size": "auto", "train_micro_batch_size_per_gpu": "auto"}
DEEPSPEED: dict[str, dict[str, Any]] = {
    "zero2": {**ZERO_COMMON, "zero_optimization": {
        "stage": 2, "overlap_comm": True, "contiguous_gradients": True,
        "reduce_bucket_size": "auto", "allgather_bucket_size": 5e8}},
    "zero3": {**ZERO_COMMON, "zero_optimization": {
        "stage": 3, "overlap_comm": True, "contiguous_gradients": True,
        "reduce_bucket_size": "auto", "stage3_prefetch_bucket_size": "auto",
        "stage3_param_persistence_threshold": "auto",
        "stage3_gather_16bit_weights_on_model_save": True}},
}


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


def dataset_keys(objective: str, train_path: Path) -> dict[str, Any]:
    """How Axolotl reads our normalised rows for the objective (config/objectives.py)."""
    entry = OBJECTIVES[objective]
    return {**entry.trainer, "datasets": [{"path": str(train_path), **entry.reads}]}


class TemplateChat:
    """The base model's chat template, for objectives whose trainer takes rendered prompts."""

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir

    @cached_property
    def tokenizer(self) -> Any:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(self.base_dir)

    def render(self, history: list[dict[str, str]]) -> str:
        return self.tokenizer.apply_chat_template(history, add_generation_prompt=True,
                                                  tokenize=False)

    @property
    def turn_end(self) -> str:
        ends = turn_end(self.tokenizer)
        return ends[0] if ends else self.tokenizer.eos_token or ""


def reshaped(objective: str, base_dir: Path, paths: list[Path], out_dir: Path,
             columns: dict[str, Any] | None = None) -> list[Path]:
    """The split files in the layout the objective's trainer reads, with `columns` added to
    every row: copies under `out_dir` (each written whole, then renamed), or `paths` themselves
    when it reads ours."""
    reshape = OBJECTIVES[objective].reshape
    if reshape is None:
        return paths
    chat = TemplateChat(base_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    shaped = []
    for path in paths:
        rows = [r | (columns or {}) for line in path.read_text().splitlines() if line.strip()
                for r in reshape(json.loads(line), chat)]
        target, tmp = out_dir / path.name, out_dir / f".{path.name}.tmp"
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
        os.replace(tmp, target)
        shaped.append(target)
    return shaped


def method_keys(spec: AdapterSpec) -> dict[str, Any]:
    if spec.method == "full":
        return {}
    keys: dict[str, Any] = {"adapter": spec.method, "lora_r": spec.lora.r,
                            "lora_alpha": spec.lora.alpha, "lora_dropout": spec.lora.dropout}
    if spec.method == "qlora":
        keys["load_in_4bit"] = True
        keys["bnb_config_kwargs"] = {"bnb_4bit_compute_dtype": spec.qlora.compute_dtype,
                                     "bnb_4bit_quant_type": spec.qlora.quant_type,
                                     "bnb_4bit_use_double_quant": spec.qlora.double_quant}
    if spec.lora.target_modules:
        keys["lora_target_modules"] = list(spec.lora.target_modules)
    else:
        keys["lora_target_linear"] = True
    return keys


class RecipeError(ValueError):
    """A recipe this base model cannot train as written; the message names the key."""


def base_config(base_dir: Path) -> dict[str, Any]:
    return json.loads((base_dir / "config.json").read_text())


def decoder_layer_class(config: dict[str, Any]) -> str:
    """FSDP wraps each decoder layer: LlamaForCausalLM's is LlamaDecoderLayer (the convention
    of every decoder in transformers that Axolotl trains)."""
    (architecture,) = config.get("architectures") or ["?"]
    if not architecture.endswith("ForCausalLM"):
        raise RecipeError(f"training.distributed: fsdp2 wraps decoder layers, but the base "
                          f"model is a {architecture}; use zero2 or zero3")
    return architecture.removesuffix("ForCausalLM") + "DecoderLayer"


def scaling_keys(spec: AdapterSpec, base_dir: Path, gpus: int) -> dict[str, Any]:
    """Packing, attention, checkpointing, Liger and sharding over `gpus` GPUs."""
    t = spec.training
    keys: dict[str, Any] = {"attn_implementation": t.attention}
    if t.packing:
        # eval loss stays per row: a small val split packs into too few batches
        keys |= {"sample_packing": True, "pad_to_sequence_len": True,
                 "eval_sample_packing": False}
    if t.gradient_checkpointing:
        keys |= {"gradient_checkpointing": True,
                 "gradient_checkpointing_kwargs": {"use_reentrant": False}}
    if t.liger:
        model_type = base_config(base_dir).get("model_type", "?")
        if model_type not in LIGER_MODEL_TYPES:
            raise RecipeError(f"training.liger: Liger has no kernels for {model_type} models "
                              f"(it patches {', '.join(sorted(LIGER_MODEL_TYPES))}); drop it")
        keys |= LIGER_KEYS
    if gpus > 1 and t.distributed in DEEPSPEED:
        keys["deepspeed"] = DEEPSPEED[t.distributed]
    elif gpus > 1 and t.distributed == "fsdp2":
        keys |= {"fsdp_version": 2, "fsdp_config": {
            "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
            "transformer_layer_cls_to_wrap": decoder_layer_class(base_config(base_dir)),
            "state_dict_type": "FULL_STATE_DICT", "reshard_after_forward": True,
            "offload_params": False,
            # loading on rank 0 only cannot quantise to 4 bits (Axolotl refuses the pair)
            "cpu_ram_efficient_loading": spec.method != "qlora"}}
    return keys


def tracking_keys(tracking: TrackingSpec, run_name: str) -> dict[str, Any]:
    if not tracking.wandb:
        return {}
    return {"use_wandb": True, "wandb_project": tracking.project, "wandb_mode": tracking.mode,
            "wandb_name": run_name, "report_to": "wandb"}


def rl_keys(spec: AdapterSpec, graders: list[dict[str, Any]], target: str,
            generation_share: float | None) -> dict[str, Any]:
    """GRPO's `trl` block: a reward function per grader (worker/rewards.py, by position; each row
    carries the graders), their weights, and the sampling. On a CPU the training process samples
    (transformers); on a GPU vLLM runs in the same process on the same card (TRL's colocate
    mode: the LoRA is merged into vLLM's weights after each update), holding the share of the
    card the memory estimate sized (compute/memory.py), TRL's 0.3 when no card is named."""
    if spec.objective != "grpo":
        return {}
    g = spec.rl
    keys = {"logging_steps": 1, "trl": {  # a reward per step: GRPO's steps are few and slow
        "reward_funcs": [f"worker.rewards.grader_{i}" for i in range(len(graders))],
        "reward_weights": [grader["weight"] for grader in graders],
        "num_generations": g.num_generations, "max_completion_length": g.max_completion_length,
        "temperature": g.temperature, "beta": g.beta, "use_vllm": target == "gpu"}}
    if target == "gpu":
        keys["trl"]["vllm_mode"] = "colocate"
        keys["vllm"] = {"gpu_memory_utilization": generation_share or 0.3,
                        "tensor_parallel_size": 1}  # one vLLM per training rank
    return keys


def eval_keys(spec: AdapterSpec, val_path: Path | None) -> dict[str, Any]:
    """Eval loss on the val split, read the way the train split is read (for DPO: the preference
    loss on held-out pairs), is what the loss plot shows beside training loss and sweeps rank.
    GRPO has no loss to hold out: its evaluation is the gate's."""
    if val_path is None or spec.objective == "grpo":
        return {}
    (train,) = dataset_keys(spec.objective, val_path)["datasets"]
    return {"test_datasets": [{**train, "split": "train"}],
            "eval_steps": spec.training.eval_every or spec.training.max_steps}


def render_adapter(spec: AdapterSpec, base_dir: Path, train_path: Path, output_dir: Path,
                   tracking: TrackingSpec, run_name: str, target: str = "cpu",
                   val_path: Path | None = None, gpus: int = 1,
                   graders: list[dict[str, Any]] | None = None,
                   start_dir: Path | None = None,
                   generation_share: float | None = None) -> str:
    """`start_dir`: trained LoRA weights to continue from (GRPO after SFT), rank and alpha
    theirs; `generation_share`: the card's share colocated vLLM holds (GRPO on a GPU)."""
    t = spec.training
    cfg = _common(base_dir, output_dir, t.seed, target) | dataset_keys(
        spec.objective, train_path) | method_keys(spec) | tracking_keys(tracking, run_name) | \
        eval_keys(spec, val_path) | scaling_keys(spec, base_dir, gpus) | rl_keys(
        spec, graders or [], target, generation_share) | {
        "sequence_len": t.sequence_len,
        "micro_batch_size": t.micro_batch_size,
        "gradient_accumulation_steps": t.gradient_accumulation_steps,
        "max_steps": t.max_steps,
        "num_epochs": 1000,  # max_steps decides; epochs only bound it
        "learning_rate": t.learning_rate,
        "lr_scheduler": t.lr_scheduler,
        "warmup_steps": t.warmup_steps,
        "save_steps": t.checkpoint_every or t.max_steps,
        "save_total_limit": 2,
        "auto_resume_from_checkpoints": True,  # a retry continues from the last checkpoint
    }
    if start_dir is not None:
        cfg["lora_model_dir"] = str(start_dir)
    for key in OBJECTIVES[spec.objective].drops:
        cfg.pop(key, None)
    return yaml.safe_dump(cfg | spec.axolotl, sort_keys=False)


# Where each Axolotl key the renderer writes comes from in factory.yaml, to name the right key
# when Axolotl's own validation rejects the rendered file.
RECIPE_KEYS = {
    "lora_r": "lora.r", "lora_alpha": "lora.alpha", "lora_dropout": "lora.dropout",
    "lora_target_modules": "lora.target_modules", "adapter": "method",
    "load_in_4bit": "method", "rl": "objective", "sequence_len": "training.sequence_len",
    "micro_batch_size": "training.micro_batch_size",
    "gradient_accumulation_steps": "training.gradient_accumulation_steps",
    "max_steps": "training.max_steps", "learning_rate": "training.learning_rate",
    "lr_scheduler": "training.lr_scheduler", "warmup_steps": "training.warmup_steps",
    "save_steps": "training.checkpoint_every", "seed": "training.seed",
    "eval_steps": "training.eval_every",
    "sample_packing": "training.packing", "attn_implementation": "training.attention",
    "gradient_checkpointing": "training.gradient_checkpointing", "plugins": "training.liger",
    "deepspeed": "training.distributed", "fsdp_config": "training.distributed",
    "fsdp_version": "training.distributed", "bnb_config_kwargs": "qlora", "trl": "grpo",
    "vllm": "grpo",
}


def recipe_key(adapter: str, spec: AdapterSpec, axolotl_key: str) -> str:
    top = axolotl_key.split(".")[0]
    if top in spec.axolotl:
        return f"adapters.{adapter}.axolotl.{axolotl_key}"
    if top in RECIPE_KEYS:
        return f"adapters.{adapter}.{RECIPE_KEYS[top]}"
    return f"adapters.{adapter} (Axolotl key {axolotl_key}, set by Adapter Factory)"


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
