"""Bare vLLM (no gateway, no factory code in the request path) over a random tiny Llama and two
random LoRA adapters: the smallest setting in which a batch's rows can borrow each other's
adapter. Built in seconds; the adapters are strong enough that any leak changes the text."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from replica.batch_isolation import SWITCH
from tests.support.live_server import free_port, wait_until_up
from worker.build_base_model import build_tokenizer

SERVE_PYTHON = Path(__file__).resolve().parents[2] / ".venvs" / "serve" / "bin" / "python"
ADAPTERS = ("alpha", "beta")
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
WORDS = ["apple", "river", "stone", "cloud", "seven", "green", "table", "window", "music",
         "paper", "light", "storm", "garden", "silver", "number", "bridge", "yellow", "forest",
         "candle", "orange", "winter", "market", "letter", "planet"]


def build_model(folder: Path) -> Path:
    """A 2-layer random Llama (hidden 128; head size 64, vLLM-CPU attends no smaller) with a
    byte-level tokenizer and a chat template."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    texts = [" ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(12)) for i in range(200)]
    tokenizer = build_tokenizer(texts, vocab_size=320, out=folder)
    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2,
                         vocab_size=len(tokenizer), max_position_embeddings=512,
                         bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
                         initializer_range=0.2)  # peaked logits: greedy ties are unlikely
    LlamaForCausalLM(config).to(torch.float32).save_pretrained(folder)
    return folder


def build_adapter(folder: Path, base: Path, seed: int, rank: int = 8) -> Path:
    """A PEFT LoRA on every linear layer of `base`, with random A and B (B is zero in a fresh
    PEFT adapter; a random one makes the adapter change every answer)."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(base)
    hidden, inner = config.hidden_size, config.intermediate_size
    shapes = {"q_proj": (hidden, hidden), "k_proj": (hidden, hidden), "v_proj": (hidden, hidden),
              "o_proj": (hidden, hidden), "gate_proj": (hidden, inner),
              "up_proj": (hidden, inner), "down_proj": (inner, hidden)}
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for layer in range(config.num_hidden_layers):
        for module, (fan_in, fan_out) in shapes.items():
            part = "self_attn" if module.endswith(("q_proj", "k_proj", "v_proj", "o_proj")) \
                else "mlp"
            prefix = f"base_model.model.model.layers.{layer}.{part}.{module}"
            tensors[f"{prefix}.lora_A.weight"] = torch.randn(
                rank, fan_in, generator=generator) * 0.3
            tensors[f"{prefix}.lora_B.weight"] = torch.randn(
                fan_out, rank, generator=generator) * 0.3
    folder.mkdir(parents=True)
    save_file(tensors, folder / "adapter_model.safetensors")
    (folder / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": rank, "lora_alpha": rank,
        "target_modules": list(TARGETS), "lora_dropout": 0.0, "bias": "none",
        "base_model_name_or_path": str(base)}))
    return folder


@contextmanager
def bare_servers(model: Path, adapters: dict[str, Path], logs: Path, variants: dict[str, bool]
                 ) -> Iterator[dict[str, str]]:
    """`python -m vllm.entrypoints.openai.api_server` on the model and adapters, one server per
    variant with this project's batch-isolation patch on (True) or off, started side by side;
    yields each variant's URL."""
    started: dict[str, tuple[str, subprocess.Popen, Path]] = {}
    try:
        for variant, isolated in variants.items():
            port, log = free_port(), logs / f"{variant}.log"
            env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1",
                   "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1",
                   SWITCH: "on" if isolated else "off"}
            env.pop("VIRTUAL_ENV", None)
            env.pop("FACTORY_LORA_STORE", None)
            command = [str(SERVE_PYTHON), "-m", "vllm.entrypoints.openai.api_server",
                       "--model", str(model), "--served-model-name", "base",
                       "--dtype", "float32", "--host", "127.0.0.1", "--port", str(port),
                       "--max-model-len", "256", "--max-num-seqs", "32", "--enable-lora",
                       "--max-lora-rank", "8", "--max-loras", str(len(adapters)),
                       "--lora-modules", *(f"{n}={p}" for n, p in adapters.items())]
            with log.open("w") as out:
                proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
            started[variant] = (f"http://127.0.0.1:{port}", proc, log)
        for url, proc, log in started.values():
            wait_until_up(f"{url}/health", proc, log, timeout_s=300)
        yield {variant: url for variant, (url, _, _) in started.items()}
    finally:
        for _, proc, _ in started.values():
            proc.terminate()
        for _, proc, _ in started.values():
            proc.wait(30)
