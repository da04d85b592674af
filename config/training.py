"""An adapter's `lora`, `qlora`, `training` and `tracking` keys: the recipe Axolotl runs."""

from __future__ import annotations

from typing import Literal

from pydantic import (
    Field,
)

from config.common import Strict


class LoraSpec(Strict):
    r: int = Field(8, ge=1, le=256)
    alpha: int = Field(16, ge=1)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] | None = Field(None, description="None = every linear layer")


# Attention backends that keep packed samples apart (Axolotl's attn_decontaminates_packing)
PACKING_SAFE_ATTENTION = ("sdpa", "eager", "flash_attention_2", "flash_attention_3",
                          "flex_attention", "xformers")


GPU_ATTENTION = ("flash_attention_2", "flash_attention_3", "xformers")


# model_type values (config.json) whose layers Axolotl's Liger plugin patches, Liger 0.8.1
LIGER_MODEL_TYPES = frozenset({
    "llama", "mistral", "mixtral", "gemma", "gemma2", "gemma3", "qwen2", "qwen3", "qwen3_moe",
    "phi3", "granite", "olmo2", "smollm3", "glm4", "nemotron"})


class QloraSpec(Strict):
    """How method: qlora quantises the frozen base (bitsandbytes' 4-bit)."""

    compute_dtype: Literal["bfloat16", "float16"] = Field(
        "bfloat16", description="the dtype 4-bit weights are dequantised to for each matmul; "
                                "float16 on cards without bf16 (T4)")
    quant_type: Literal["nf4", "fp4"] = "nf4"
    double_quant: bool = Field(True, description="quantise the quantisation constants too "
                                                 "(about 0.4 bits per parameter saved)")


class TrainingSpec(Strict):
    max_steps: int = Field(300, ge=1)
    micro_batch_size: int = Field(8, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    learning_rate: float = Field(2e-3, gt=0)
    lr_scheduler: str = "cosine"
    warmup_steps: int = Field(10, ge=0)
    sequence_len: int = Field(256, ge=32)
    seed: int = 0
    checkpoint_every: int | None = Field(
        None, ge=1, description="save (and upload) a checkpoint every N steps; default: the end")
    eval_every: int | None = Field(
        None, ge=1, description="eval loss on the val split every N steps; default: at the end "
                                "(when the val split has rows; for dpo the preference loss)")
    packing: bool = Field(False, description=(
        "pack several rows into each sequence_len sequence (Axolotl's sample packing): no "
        "compute spent on padding. Samples stay apart: the attention backend masks across "
        "their boundaries (block-diagonal with sdpa/eager, variable-length with flash "
        "attention); SFT and pre-training objectives only"))
    attention: Literal[PACKING_SAFE_ATTENTION] = Field(  # type: ignore[valid-type]
        "sdpa", description="Axolotl's attn_implementation: sdpa (PyTorch's, everywhere), "
                            "flash_attention_2/3 (where flash-attn is installed on the GPU box), "
                            "flex_attention, xformers, eager")
    gradient_checkpointing: bool = Field(False, description=(
        "keep only each layer's input and recompute the rest in the backward pass: activation "
        "memory / layers for a third more compute"))
    liger: bool = Field(False, description=(
        "Liger's Triton kernels (RoPE, RMSNorm, SwiGLU, fused linear cross-entropy, which never "
        "materialises the logits): GPU only, for the architectures in LIGER_MODEL_TYPES"))
    distributed: Literal["ddp", "zero2", "zero3", "fsdp2"] = Field("ddp", description=(
        "with several GPUs: ddp (a full copy per GPU), zero2 (DeepSpeed shards gradients and "
        "optimizer states), zero3 (and the weights), fsdp2 (PyTorch FSDP2, sharding like "
        "zero3); launched with torchrun, one process per GPU"))


class TrackingSpec(Strict):
    """Weights & Biases through its own client: offline files (sync later with `wandb sync`)
    unless an API key is in the environment and mode is online."""

    wandb: bool = True
    project: str = "adapter-factory"
    mode: Literal["offline", "online"] = "offline"
