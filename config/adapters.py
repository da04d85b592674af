"""The `adapters` section: base model, dataset, objective, method and recipe of each adapter, and
what its compute must offer."""

from __future__ import annotations

import itertools
from typing import Any, Literal

from pydantic import (
    Field,
    ValidationError,
    model_validator,
)

from config.base_models import BaseModelSpec, language_model_problems
from config.common import Name, Strict, reference_problems
from config.compute_spec import ComputeBase
from config.datasets import DatasetSpec
from config.graders import GrpoSpec
from config.objectives import OBJECTIVES
from config.size_presets import SIZE_PRESETS, with_preset
from config.training import GPU_ATTENTION, PACKING_SAFE_ATTENTION, LoraSpec, QloraSpec, TrainingSpec

MAX_TRIALS = 16


VLLM_LORA_MODULES = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                     "down_proj", "qkv_proj", "gate_up_proj"}


class CardSpec(Strict):
    """What only people know about an adapter, for its model card (README.md beside the
    weights); everything else on the card comes from the artifacts."""

    intended_use: str | None = Field(None, description="who should ask it what")
    limitations: str | None = Field(None, description="what it must not be trusted with")


class AdapterSpec(Strict):
    base_model: Name
    dataset: Name
    preset: Literal[tuple(SIZE_PRESETS)] | None = Field(  # type: ignore[valid-type]
        None, description="a starting recipe for the base model's size on one 80 GB-class GPU ("
        + "; ".join(f"{name}: {p['method']}, micro batch {p['training']['micro_batch_size']}"
                    for name, p in SIZE_PRESETS.items())
        + "); keys set beside it win")
    card: CardSpec = Field(CardSpec(), description="not part of the version: editing it "
                                                   "rewrites the card, never retrains")
    method: Literal["lora", "qlora", "full"] = Field(
        "lora", description="lora; qlora (4-bit base, GPU only); full fine-tuning (small models; "
                            "served as its own model, not as a LoRA)")
    objective: Literal[tuple(OBJECTIVES)] = Field(  # type: ignore[valid-type]
        "sft", description="; ".join(f"{name}: {o.description}"
                                     for name, o in OBJECTIVES.items()))
    grpo: GrpoSpec | None = Field(
        None, description="objective: grpo: graders and sampling (default: the evaluation's "
                          "scorer, 4 replies a prompt)")
    lora: LoraSpec = LoraSpec()
    qlora: QloraSpec = Field(QloraSpec(), description="method: qlora's quantisation")
    training: TrainingSpec = TrainingSpec()
    axolotl: dict[str, Any] = Field(
        default_factory=dict, description="raw Axolotl keys passed through unchanged"
    )
    sweep: dict[str, list[Any]] = Field(
        default_factory=dict,
        description="recipe keys (training.learning_rate, lora.r, ...) -> values to try; every "
                    "combination trains as adapter '<name>-trial<i>' and the one with the "
                    "lowest eval loss becomes '<name>'")

    @model_validator(mode="before")
    @classmethod
    def _preset(cls, data: Any) -> Any:
        return with_preset(data) if isinstance(data, dict) else data

    @model_validator(mode="after")
    def _sweepable(self) -> AdapterSpec:
        if not self.sweep:
            return self
        for key, values in self.sweep.items():
            if key.split(".")[0] not in ("training", "lora") or key.count(".") != 1:
                raise ValueError(f"sweep.{key}: sweep keys are training.<field> or lora.<field>")
            if not values:
                raise ValueError(f"sweep.{key}: give at least one value")
        if len(self.trials()) > MAX_TRIALS:
            raise ValueError(f"sweep: {len(self.trials())} combinations; at most {MAX_TRIALS}")
        return self

    def trials(self) -> list[tuple[dict[str, Any], AdapterSpec]]:
        """Every combination of the sweep's values: (the values, the recipe that trains it)."""
        combos = [dict(zip(self.sweep, values, strict=True))
                  for values in itertools.product(*self.sweep.values())]
        trials = []
        for combo in combos:
            recipe = self.model_dump(exclude={"sweep"})
            for key, value in combo.items():
                section, field = key.split(".")
                recipe[section][field] = value
            try:
                trials.append((combo, AdapterSpec.model_validate(recipe)))
            except ValidationError as exc:
                raise ValueError(f"sweep {combo}: {exc.errors()[0]['msg']} "
                                 f"(at {'.'.join(map(str, exc.errors()[0]['loc']))})") from exc
        return trials

    @property
    def rl(self) -> GrpoSpec:
        """GRPO's settings as trained: the declared ones, or the defaults."""
        return self.grpo or GrpoSpec()

    @model_validator(mode="after")
    def _servable(self) -> AdapterSpec:
        """vLLM multi-LoRA loads only LoRA on its supported linear layers, without trained
        embeddings or lm_head: say so now, not after hours of training."""
        unknown = set(self.lora.target_modules or []) - VLLM_LORA_MODULES
        if unknown:
            raise ValueError(f"lora.target_modules {sorted(unknown)} cannot be served by vLLM "
                             f"multi-LoRA; use some of {sorted(VLLM_LORA_MODULES)}")
        if self.axolotl.get("lora_modules_to_save") or self.axolotl.get("modules_to_save"):
            raise ValueError("axolotl.lora_modules_to_save trains embeddings/lm_head, which vLLM "
                             "multi-LoRA cannot load; remove it (or train method: full)")
        return self


def recipe_compute_problems(name: str, a: AdapterSpec, compute: ComputeBase) -> list[str]:
    """What a recipe asks of the machine that trains it: a GPU for 4-bit and Triton kernels,
    several GPUs to shard over, bf16 where the card has it."""
    where, t, box = f"adapters.{name}", a.training, compute.gpu_box
    problems = []
    if compute.device == "cpu":
        if a.method == "qlora":
            problems.append(f"{where}.method: qlora loads the base model in 4 bits with "
                            "bitsandbytes CUDA kernels, which need a GPU; set compute.device: "
                            "gpu or use method: lora on this CPU")
        if t.liger:
            problems.append(f"{where}.training.liger: Liger's kernels are Triton GPU kernels; "
                            "set compute.device: gpu or drop it on this CPU")
        if t.attention in GPU_ATTENTION:
            problems.append(f"{where}.training.attention: {t.attention} runs on CUDA only; "
                            "use sdpa on this CPU")
    if t.distributed != "ddp" and (box is None or box.count < 2):
        has = f"compute gives {box}" if box else "compute names no GPUs (compute.gpu)"
        problems.append(f"{where}.training.distributed: {t.distributed} shards over several "
                        f"GPUs but {has}; use ddp on one GPU")
    if a.objective == "grpo" and a.sweep:
        problems.append(f"{where}.sweep: a sweep ranks its trials by eval loss, which GRPO does "
                        "not have; drop the sweep")
    if a.grpo is not None and a.objective != "grpo":
        problems.append(f"{where}.grpo: only objective: grpo samples and grades replies; drop "
                        "it or set objective: grpo")
    generations, rows = a.rl.num_generations, t.micro_batch_size * t.gradient_accumulation_steps
    gpus = box.count if box else 1
    if a.objective == "grpo" and gpus > 1 and rows < generations * gpus:
        # Axolotl's rule: every GPU holds whole groups of one step
        problems.append(f"{where}.training: GRPO on {gpus} GPUs needs micro_batch_size x "
                        f"gradient_accumulation_steps >= num_generations x GPUs = "
                        f"{generations * gpus}, got {rows}; raise gradient_accumulation_steps")
    if a.objective == "grpo" and rows % generations:
        problems.append(f"{where}.grpo.num_generations: {generations} replies a prompt must "
                        f"divide a step's {rows} "
                        "(training.micro_batch_size x gradient_accumulation_steps)")
    if t.packing and not OBJECTIVES[a.objective].packs:
        problems.append(f"{where}.training.packing: {a.objective} trains on pairs or labelled "
                        "rows that Axolotl does not pack; drop packing")
    raw_attention = a.axolotl.get("attn_implementation")
    if t.packing and raw_attention is not None and raw_attention not in PACKING_SAFE_ATTENTION:
        problems.append(f"{where}.axolotl.attn_implementation: {raw_attention} would let packed "
                        f"rows attend to each other; use training.attention (one of "
                        f"{', '.join(PACKING_SAFE_ATTENTION)})")
    if (a.method == "qlora" and a.qlora.compute_dtype == "bfloat16" and box is not None
            and not box.gpu.bf16):
        problems.append(f"{where}.qlora.compute_dtype: {box.gpu.name} has no bfloat16; use "
                        "float16")
    return problems


def trial_names(name: str, spec: AdapterSpec) -> list[str]:
    return [f"{name}-trial{i}" for i in range(1, len(spec.trials()) + 1)] if spec.sweep else []


def adapter_problems(adapters: dict[str, AdapterSpec], base_models: dict[str, BaseModelSpec],
                     datasets: dict[str, DatasetSpec], compute: ComputeBase) -> list[str]:
    problems: list[str] = []
    for name, a in adapters.items():
        for trial in trial_names(name, a):
            if trial in adapters:
                problems.append(f"adapters.{trial}: the name of a trial of adapters.{name}'s "
                                "sweep; rename it")
        problems += language_model_problems(f"adapters.{name}.base_model", a.base_model,
                                            base_models)
        problems += reference_problems(f"adapters.{name}.dataset", a.dataset, datasets,
                                       "datasets")
        data = datasets.get(a.dataset)
        wanted = OBJECTIVES[a.objective].data
        if data and data.kind not in wanted:
            problems.append(f"adapters.{name}.objective: {a.objective} trains on "
                            f"{' or '.join(wanted)} data but datasets.{a.dataset} is kind: "
                            f"{data.kind}")
        problems += recipe_compute_problems(name, a, compute)
    return problems
