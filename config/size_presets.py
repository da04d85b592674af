"""Starting recipes per base-model size on one 80 GB-class GPU (`adapters.<name>.preset: 8b`),
as peers' published LoRA/QLoRA configs set them: every key a preset fills can still be set
beside it, and an explicit key wins. Smaller cards: the adapter asset's memory estimate says
what to change before a machine starts."""

from __future__ import annotations

from typing import Any

from config.objectives import OBJECTIVES

SIZE_PRESETS: dict[str, dict[str, Any]] = {
    # up to ~1.5 B parameters (Llama 3.2 1B, Qwen2.5 0.5-1.5B, SmolLM2 1.7B)
    "1b": {"method": "lora", "lora": {"r": 16, "alpha": 32},
           "training": {"sequence_len": 2048, "micro_batch_size": 4,
                        "gradient_accumulation_steps": 4, "learning_rate": 2e-4,
                        "packing": True}},
    # ~3-4 B (Llama 3.2 3B, Qwen2.5 3B, Phi-3 mini)
    "3b": {"method": "lora", "lora": {"r": 16, "alpha": 32},
           "training": {"sequence_len": 2048, "micro_batch_size": 4,
                        "gradient_accumulation_steps": 4, "learning_rate": 2e-4,
                        "packing": True, "gradient_checkpointing": True}},
    # ~7-9 B (Llama 3.1 8B, Mistral 7B, Qwen2.5 7B)
    "8b": {"method": "lora", "lora": {"r": 16, "alpha": 32},
           "training": {"sequence_len": 2048, "micro_batch_size": 2,
                        "gradient_accumulation_steps": 8, "learning_rate": 1e-4,
                        "packing": True, "gradient_checkpointing": True}},
    # ~13-15 B (Qwen2.5 14B, Phi-4): 4-bit base
    "14b": {"method": "qlora", "lora": {"r": 16, "alpha": 32},
            "training": {"sequence_len": 2048, "micro_batch_size": 2,
                         "gradient_accumulation_steps": 8, "learning_rate": 1e-4,
                         "packing": True, "gradient_checkpointing": True}},
    # ~65-72 B (Llama 3.3 70B, Qwen2.5 72B): 4-bit base, one row per step
    "70b": {"method": "qlora", "lora": {"r": 16, "alpha": 32},
            "training": {"sequence_len": 2048, "micro_batch_size": 1,
                         "gradient_accumulation_steps": 16, "learning_rate": 1e-4,
                         "packing": True, "gradient_checkpointing": True}},
}


def with_preset(adapter: dict[str, Any]) -> dict[str, Any]:
    """`adapter` (factory.yaml's raw entry) over its preset's values; packing only where the
    objective's trainer packs (not DPO's pairs)."""
    preset = SIZE_PRESETS.get(adapter.get("preset"))  # type: ignore[arg-type]
    if preset is None:  # none, or a name the schema's Literal rejects with the choices
        return adapter
    objective = OBJECTIVES.get(adapter.get("objective", "sft"))
    merged: dict[str, Any] = {**preset, **adapter}
    for section in ("lora", "training"):
        given = adapter.get(section, {})
        if isinstance(given, dict):  # anything else: the schema's own error, unmasked
            merged[section] = {**preset[section], **given}
    training = merged["training"]
    if objective is not None and not objective.packs and isinstance(training, dict) and \
            "packing" not in (adapter.get("training") or {}):
        training.pop("packing", None)
    return merged
