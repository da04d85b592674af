"""Will this recipe fit this GPU, and how long will a step take? Estimated from the base model's
config.json and the recipe, before any machine starts, so a recipe that cannot fit fails with
the numbers and what to change instead of an out-of-memory error an hour into a cloud bill.

The counts are the usual ones (per GPU, bytes):
- weights: 2 per parameter (bf16); QLoRA's 4-bit linear layers about 0.52 (NF4 plus its
  quantisation constants), embeddings and norms stay bf16;
- what trains, mixed-precision AdamW as the ZeRO paper counts it: 16 per trainable parameter
  (its weight, gradient and two fp32 moments; LoRA's adapters are kept in fp32);
- activations of a decoder layer, with SDPA/flash attention (no sequence-squared term):
  2 x (6 hidden + 2 kv width + 3 intermediate) per token, kept for every layer; with gradient
  checkpointing only each layer's input is kept, plus one layer's worth being recomputed;
- the loss: logits in bf16, their fp32 copy and its gradient, 10 x vocabulary per token, which
  Liger's fused linear cross-entropy never materialises;
- ZeRO-2 shards gradients and optimizer states over the GPUs, ZeRO-3 and FSDP2 the weights too;
- 1 GiB of CUDA context and 8 % allocator slack;
- GRPO's generation, when vLLM is colocated on the card: what vLLM reserves (its
  `gpu_memory_utilization` share, rounded up to 0.05 of the card), sized for bf16 weights, the
  KV cache of one generation batch (every prompt of a step, each to the sequence length; at
  least one sequence of the model's whole context) and 20 % plus 1 GiB for its own work.
Compared with measured peaks by bench/gpu_training.py when a GPU is lent (docs/figures.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from compute.gpus import GpuBox

GIB = 1024 ** 3
HEADROOM = 0.95  # of a card's memory a recipe may plan for
ASSUMED_MFU = 0.40  # for the time estimate: a well-tuned bf16 run on one card
SHARDING = {  # distributed -> (weights sharded, gradients and optimizer sharded)
    "ddp": (False, False), "zero2": (False, True), "zero3": (True, True), "fsdp2": (True, True)}
LINEAR_LAYERS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class ModelShape:
    """What the estimate reads from a decoder's config.json (Llama, Mistral, Qwen2, Gemma...)."""

    model_type: str
    vocab: int
    hidden: int
    layers: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    tied: bool
    context: int = 0  # max_position_embeddings (0: not stated)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ModelShape:
        heads = config["num_attention_heads"]
        return cls(model_type=config.get("model_type", "?"), vocab=config["vocab_size"],
                   hidden=config["hidden_size"], layers=config["num_hidden_layers"],
                   intermediate=config["intermediate_size"], heads=heads,
                   kv_heads=config.get("num_key_value_heads") or heads,
                   head_dim=config.get("head_dim") or config["hidden_size"] // heads,
                   tied=bool(config.get("tie_word_embeddings", False)),
                   context=int(config.get("max_position_embeddings") or 0))

    def linear(self) -> dict[str, tuple[int, int]]:
        """Each decoder layer's linear layers: name -> (in, out)."""
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        return {"q_proj": (self.hidden, q), "k_proj": (self.hidden, kv),
                "v_proj": (self.hidden, kv), "o_proj": (q, self.hidden),
                "gate_proj": (self.hidden, self.intermediate),
                "up_proj": (self.hidden, self.intermediate),
                "down_proj": (self.intermediate, self.hidden)}

    @property
    def linear_parameters(self) -> int:
        return self.layers * sum(i * o for i, o in self.linear().values())

    @property
    def embedding_parameters(self) -> int:
        """Input embeddings and, when untied, the output head."""
        return self.vocab * self.hidden * (1 if self.tied else 2)

    @property
    def parameters(self) -> int:
        norms = (2 * self.layers + 1) * self.hidden
        return self.linear_parameters + self.embedding_parameters + norms


@dataclass(frozen=True)
class Recipe:
    """The parts of an adapter's recipe that decide memory and speed."""

    method: str  # lora | qlora | full
    sequence_len: int
    micro_batch_size: int
    gradient_accumulation_steps: int = 1
    lora_r: int = 8
    target_modules: tuple[str, ...] | None = None  # None: every linear layer
    packing: bool = False
    gradient_checkpointing: bool = False
    liger: bool = False
    distributed: str = "ddp"
    generation: bool = False  # GRPO with vLLM colocated: it holds a share of the card


@dataclass(frozen=True)
class Estimate:
    shape: ModelShape
    recipe: Recipe
    box: GpuBox
    trainable: int
    weights_gib: float
    training_state_gib: float  # trainable weights' gradients and optimizer states
    activations_gib: float
    loss_gib: float
    overhead_gib: float
    generation_gib: float  # vLLM's reservation (GRPO colocated), 0 otherwise
    tokens_per_step: int  # all GPUs, padded to sequence_len
    flops_per_step: float

    @property
    def total_gib(self) -> float:
        return (self.weights_gib + self.training_state_gib + self.activations_gib
                + self.loss_gib + self.overhead_gib + self.reserved_gib)

    @property
    def generation_share(self) -> float:
        """vLLM's gpu_memory_utilization: its need over the card, up to the next 0.05."""
        return min(0.9, math.ceil(self.generation_gib / self.box.gpu.memory_gib * 20) / 20)

    @property
    def reserved_gib(self) -> float:
        """What vLLM takes of the card: its whole share, not just its need."""
        return self.generation_share * self.box.gpu.memory_gib if self.generation_gib else 0.0

    @property
    def usable_gib(self) -> float:
        return self.box.gpu.memory_gib * HEADROOM

    @property
    def fits(self) -> bool:
        return self.total_gib <= self.usable_gib

    def seconds_per_step(self, mfu: float = ASSUMED_MFU) -> float:
        return self.flops_per_step / (self.box.count * self.box.gpu.bf16_tflops * 1e12 * mfu)

    def rows(self) -> dict[str, str]:
        """The breakdown as people read it (metadata, error messages)."""
        return {
            "parameters": f"{self.shape.parameters / 1e9:.2f} B, "
                          f"{self.trainable / 1e6:,.1f} M trained",
            "weights": f"{self.weights_gib:.1f} GiB",
            "gradients + optimizer": f"{self.training_state_gib:.1f} GiB",
            "activations": f"{self.activations_gib:.1f} GiB",
            "loss (logits)": f"{self.loss_gib:.1f} GiB",
            "CUDA context + slack": f"{self.overhead_gib:.1f} GiB",
            **({"generation (vLLM colocated)": f"{self.reserved_gib:.1f} GiB reserved "
                f"(gpu_memory_utilization {self.generation_share:.2f}) for "
                f"{self.generation_gib:.1f} GiB needed"}
               if self.recipe.generation else {}),
            "per GPU": f"{self.total_gib:.1f} GiB of {self.usable_gib:.1f} usable on "
                       f"{self.box.gpu.name}",
            "tokens per step": f"{self.tokens_per_step:,}",
            "step time": f"{self.seconds_per_step():.2f} s at {ASSUMED_MFU:.0%} MFU" + (
                " (the update; sampling not estimated)" if self.recipe.generation else ""),
        }


def trainable_parameters(shape: ModelShape, recipe: Recipe) -> int:
    if recipe.method == "full":
        return shape.parameters
    targets = recipe.target_modules or LINEAR_LAYERS
    return shape.layers * sum(recipe.lora_r * (i + o) for name, (i, o) in shape.linear().items()
                              if name in targets)


def generation_bytes(shape: ModelShape, recipe: Recipe) -> float:
    """What colocated vLLM needs for GRPO's sampling: bf16 weights, the KV cache of a whole
    generation batch (micro batch x accumulation completions, to the sequence length) but at
    least one sequence of the model's whole context (Axolotl starts vLLM without a
    max_model_len, and vLLM refuses to start without room for one), and 20 % plus 1 GiB for
    its activations, sampler and CUDA graphs."""
    if not recipe.generation:
        return 0.0
    kv_per_token = 2 * shape.layers * shape.kv_heads * shape.head_dim * 2  # K and V, bf16
    tokens = max(shape.context, recipe.micro_batch_size * recipe.gradient_accumulation_steps
                 * recipe.sequence_len)
    return 1.2 * (2 * shape.parameters + kv_per_token * tokens) + GIB


def estimate(shape: ModelShape, recipe: Recipe, box: GpuBox) -> Estimate:
    gpus = box.count
    shard_weights, shard_state = SHARDING[recipe.distributed]
    trainable = trainable_parameters(shape, recipe)
    other = shape.parameters - shape.linear_parameters  # embeddings, head, norms: bf16
    if recipe.method == "qlora":
        weights = 0.52 * shape.linear_parameters + 2 * other
    else:
        weights = 2 * shape.parameters
    weights /= gpus if shard_weights else 1
    # the 16 bytes of a trained parameter: full fine-tuning's bf16 weight is in `weights`
    state = (14 if recipe.method == "full" else 16) * trainable / (gpus if shard_state else 1)

    tokens = recipe.micro_batch_size * recipe.sequence_len  # one micro-batch on one GPU
    kv_width = shape.kv_heads * shape.head_dim
    per_layer = 2 * (6 * shape.hidden + 2 * kv_width + 3 * shape.intermediate)
    if recipe.gradient_checkpointing:
        activations = tokens * (shape.layers * 2 * shape.hidden + per_layer)
    else:
        activations = tokens * shape.layers * per_layer
    loss = 0.0 if recipe.liger else tokens * shape.vocab * 10
    overhead = GIB + 0.08 * (weights + state + activations + loss)

    step_tokens = tokens * recipe.gradient_accumulation_steps * gpus
    passes = 4 if recipe.method != "full" else 6  # frozen weights need no weight gradients
    if recipe.gradient_checkpointing:
        passes += 2  # the forward pass again
    attention = 6 * shape.layers * shape.hidden * recipe.sequence_len  # causal, fwd + bwd
    flops = step_tokens * (passes * shape.parameters + attention)
    return Estimate(shape, recipe, box, trainable, weights / GIB, state / GIB,
                    activations / GIB, loss / GIB, overhead / GIB,
                    generation_bytes(shape, recipe) / GIB, step_tokens, flops)


def remedies(shape: ModelShape, recipe: Recipe, box: GpuBox) -> list[str]:
    """What would make a recipe that does not fit fit, one change at a time, with the estimate
    each gives; empty when nothing single does."""
    tries: list[tuple[str, Recipe]] = []
    if not recipe.gradient_checkpointing:
        tries.append(("training.gradient_checkpointing: true",
                      replace(recipe, gradient_checkpointing=True)))
    if not recipe.liger:
        tries.append(("training.liger: true", replace(recipe, liger=True)))
    if recipe.micro_batch_size > 1:
        smaller = max(1, recipe.micro_batch_size // 4)
        accumulate = recipe.gradient_accumulation_steps * recipe.micro_batch_size // smaller
        tries.append((f"training.micro_batch_size: {smaller} with "
                      f"gradient_accumulation_steps: {accumulate} (same rows per step)",
                      replace(recipe, micro_batch_size=smaller,
                              gradient_accumulation_steps=accumulate)))
    if recipe.method == "lora":
        tries.append(("method: qlora", replace(recipe, method="qlora")))
    if recipe.method == "full":
        tries.append(("method: lora", replace(recipe, method="lora")))
    if box.count > 1 and recipe.distributed != "zero3":
        tries.append(("training.distributed: zero3", replace(recipe, distributed="zero3")))
    everything = replace(recipe, gradient_checkpointing=True, liger=True,
                         micro_batch_size=1, gradient_accumulation_steps=(
                             recipe.gradient_accumulation_steps * recipe.micro_batch_size))
    tries.append(("all of gradient_checkpointing, liger and micro_batch_size: 1", everything))
    found = []
    for change, changed in tries:
        after = estimate(shape, changed, box)
        if after.fits:
            found.append(f"{change} -> {after.total_gib:.1f} GiB")
    return found


class DoesNotFit(ValueError):
    """A recipe whose estimate exceeds its GPU; the message has the numbers and the fixes."""


def check_fits(where: str, shape: ModelShape, recipe: Recipe, box: GpuBox) -> Estimate:
    """The estimate, or DoesNotFit naming what to change."""
    found = estimate(shape, recipe, box)
    if found.fits:
        return found
    breakdown = "; ".join(f"{k} {v}" for k, v in found.rows().items() if k != "step time")
    fixes = remedies(shape, recipe, box)
    advice = ("change one of: " + "; ".join(fixes)) if fixes else (
        f"no single change fits {box}: use a card with more memory or more GPUs")
    raise DoesNotFit(f"{where} needs about {found.total_gib:.1f} GiB per GPU but {box} leaves "
                     f"{found.usable_gib:.1f} GiB ({breakdown}); {advice}")
