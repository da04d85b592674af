"""What the GPU benchmark trains, shared by the bundle built here and the run on the GPU machine
(stdlib only: the GPU image has neither pydantic nor Dagster).

A 1B-shaped Llama (Llama 3.2 1B's layout with SmolLM2's tokenizer, random weights) and three
recipes as `adapters.<name>` would say them in factory.yaml; the adapter asset renders each for
the GPU box, exactly as it would for a run launched there.
"""

from __future__ import annotations

from typing import Any

PLACEHOLDER = "@RUN@"  # the run folder in the rendered YAMLs; the GPU machine substitutes its own

LLAMA_1B: dict[str, Any] = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 2048,
    "num_hidden_layers": 16, "intermediate_size": 8192, "num_attention_heads": 32,
    "num_key_value_heads": 8, "max_position_embeddings": 4096, "rope_theta": 500000.0,
    "rms_norm_eps": 1e-5, "tie_word_embeddings": True, "torch_dtype": "bfloat16",
}  # vocab_size, bos/eos ids: the tokenizer's

TRAINING: dict[str, Any] = {"sequence_len": 1024, "micro_batch_size": 8, "max_steps": 40,
                            "learning_rate": 2e-4, "warmup_steps": 5, "lr_scheduler": "cosine"}
LORA: dict[str, Any] = {"r": 16, "alpha": 32}
RECIPES: dict[str, dict[str, Any]] = {
    "lora": {"method": "lora"},
    "qlora": {"method": "qlora"},
    "lora-packed": {"method": "lora", "training": {"packing": True}},
}
TRAIN_ROWS = 4000  # the demo's math word problems, chat rows; 40 x 8 rows unpacked


def adapter_entry(name: str) -> dict[str, Any]:
    """`adapters.<name>` of factory.yaml for one recipe."""
    recipe = RECIPES[name]
    return {"base_model": "llama-1b", "dataset": "math", "lora": LORA, **recipe,
            "training": {**TRAINING, **recipe.get("training", {})}}
