"""Build a small Llama and its tokenizer from nothing, deterministically (no hub download).

The tokenizer is a byte-level BPE trained on the given text with digits split one per token
(arithmetic stays learnable) and a chat template, so Axolotl, lm-eval and vLLM all treat it
like any hub model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dagster_pipes import PipesContext

from worker.pipes import open_pipes

CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}<|end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
SPECIAL_TOKENS = ["<pad>", "<s>", "<unk>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]


def build_tokenizer(texts: list[str], vocab_size: int, out: Path) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True),
         pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="<|end|>",
        unk_token="<unk>",
        chat_template=CHAT_TEMPLATE,
        model_max_length=None,
    )
    fast.save_pretrained(out)
    return fast


def build(params: dict[str, Any], out: Path, pipes: PipesContext) -> dict[str, Any]:
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    arch = params["architecture"]
    texts = Path(params["tokenizer_corpus"]).read_text(encoding="utf-8").splitlines()
    tokenizer = build_tokenizer(texts, arch["vocab_size"], out)
    pipes.log.info(f"tokenizer: {len(tokenizer)} tokens, chat template set")
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=arch["hidden_size"],
        intermediate_size=arch["intermediate_size"],
        num_hidden_layers=arch["num_layers"],
        num_attention_heads=arch["num_heads"],
        num_key_value_heads=arch["num_heads"],
        max_position_embeddings=arch["max_position_embeddings"],
        tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(params["seed"])
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    model.save_pretrained(out, safe_serialization=True)
    n_params = sum(p.numel() for p in model.parameters())
    pipes.log.info(f"initialised Llama with {n_params:,} parameters")
    return {"parameters": n_params, "vocab_size": len(tokenizer)}


def main() -> None:
    with open_pipes() as pipes:
        params = pipes.extras
        out = Path(params["output_dir"])
        out.mkdir(parents=True, exist_ok=True)
        summary = build(params, out, pipes)
        (out / "build_summary.json").write_text(json.dumps(summary))
        pipes.report_custom_message(summary)


if __name__ == "__main__":
    main()
