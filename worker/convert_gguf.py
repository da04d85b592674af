"""A GGUF language model (llama.cpp, Ollama, LM Studio files) as a Hugging Face folder.

Weights: dequantised by transformers' own GGUF loader, saved as float32 (bf16 is 30x slower on
CPUs without AVX-512 BF16, for training and serving alike). Tokenizer: built from the file's own
fields (`tokenizer.ggml.tokens`, `.merges`, `.token_type`, `.pre`, the special token ids and
`tokenizer.chat_template`), because the tokenizer transformers derives from a GGUF adds a BOS
token the model never saw after `<|im_start|>` and can take the wrong end-of-turn token.

`mode: convert` writes the folder and `conversion.json`: the file's facts (name, licence,
quantisation) and a reference, the greedy tokens the GGUF itself gives through transformers on
fixed prompts. `mode: verify` loads the written folder in a fresh process and replays them: the
base model's `reproduces_source` check.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

from worker.pipes import open_pipes

MAGIC = b"GGUF"
REFERENCE_NEW_TOKENS = 12
REFERENCE_PROMPTS: list[list[dict[str, str]] | str] = [
    [{"role": "user", "content": "What are the primary colors?"}],
    [{"role": "system", "content": "You triage support tickets. Reply with the category."},
     {"role": "user", "content": "I was charged twice for my subscription this month."}],
    "The capital of France is",
]
ROUND_TRIP_TEXTS = ["Order 4711 costs $12.50 (VAT 19%).", "  indented\n\ttabs and  spaces",
                    "Grüße, naïve café: 東京 🚀"]
# llama.cpp's pre-tokenizer names whose splitting rules we rebuild exactly; `tokenizer.ggml.pre`
# values are listed in llama.cpp's vocabulary code. Digits one per token: SmolLM's rule.
SPLIT_DIGITS = {"smollm": True, "gpt2": False, "default": False}
CONTROL = 3  # llama.cpp token type of special (control) tokens


class NotAGGUF(ValueError):
    """The file is not a GGUF language model we can convert; the message names it."""


def read(path: Path) -> Any:
    """The file's GGUF reader, or NotAGGUF naming the file and what it holds instead."""
    from gguf import GGUFReader

    if not path.is_file():
        raise NotAGGUF(f"{path}: no such file")
    with path.open("rb") as f:
        head = f.read(4)
    if head != MAGIC:
        raise NotAGGUF(f"{path} is not a GGUF file: it starts with {head!r}, not {MAGIC!r} "
                       "(a GGUF from llama.cpp, Ollama or LM Studio starts so)")
    try:
        return GGUFReader(path)
    except Exception as exc:  # truncated or corrupt: the reader's own words, with the file's name
        raise NotAGGUF(f"{path} is a damaged GGUF file ({type(exc).__name__}: {exc}); "
                       "download or copy it again") from exc


def field(reader: Any, key: str, default: Any = None) -> Any:
    found = reader.fields.get(key)
    return default if found is None else found.contents()


def facts(reader: Any, path: Path) -> dict[str, Any]:
    """What the model card and the asset's metadata say about the source."""
    arch = field(reader, "general.architecture")
    if field(reader, "tokenizer.ggml.tokens") is None:
        raise NotAGGUF(f"{path} has no tokenizer (tokenizer.ggml.tokens): it is not a "
                       "complete language model GGUF (a LoRA or a vision projector?)")
    if field(reader, "tokenizer.ggml.model") != "gpt2":
        raise NotAGGUF(f"{path}: tokenizer model {field(reader, 'tokenizer.ggml.model')!r} is "
                       "not supported yet (byte-level BPE, 'gpt2', is)")
    quantisation = Counter(t.tensor_type.name for t in reader.tensors)
    return {
        "architecture": arch,
        "original_name": field(reader, "general.name"),
        "organization": field(reader, "general.organization"),
        "license": field(reader, "general.license"),
        "quantization": dict(quantisation.most_common()),
        "context_length": field(reader, f"{arch}.context_length"),
        "layers": field(reader, f"{arch}.block_count"),
        "vocab_size": len(field(reader, "tokenizer.ggml.tokens")),
        "pre_tokenizer": field(reader, "tokenizer.ggml.pre", "default"),
    }


def build_tokenizer(reader: Any, path: Path) -> Any:
    """A fast tokenizer from the file's vocabulary, merges, special tokens and chat template."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    pre = field(reader, "tokenizer.ggml.pre", "default")
    if pre not in SPLIT_DIGITS:
        raise NotAGGUF(f"{path}: pre-tokenizer {pre!r} is not supported yet (known: "
                       f"{', '.join(sorted(SPLIT_DIGITS))}); its splitting rules decide every "
                       "token id, so converting it approximately would change the model")
    tokens: list[str] = field(reader, "tokenizer.ggml.tokens")
    types: list[int] = field(reader, "tokenizer.ggml.token_type")
    merges = [tuple(m.split(" ", 1)) for m in field(reader, "tokenizer.ggml.merges")]
    vocab = {token: i for i, token in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
    splits = [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
    if SPLIT_DIGITS[pre]:
        splits.insert(0, pre_tokenizers.Digits(individual_digits=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence(splits)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t, kind in zip(tokens, types, strict=True) if kind == CONTROL])

    def token(key: str) -> str | None:
        index = field(reader, f"tokenizer.ggml.{key}_token_id")
        return None if index is None else tokens[index]

    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=token("bos"), eos_token=token("eos"),
        unk_token=token("unknown"), pad_token=token("padding") or token("eos"),
        chat_template=field(reader, "tokenizer.chat_template"),
        model_max_length=field(reader, f"{field(reader, 'general.architecture')}.context_length"),
        add_bos_token=bool(field(reader, "tokenizer.ggml.add_bos_token", False)),
    )


def prompt_ids(tokenizer: Any) -> list[list[int]]:
    out = []
    for prompt in REFERENCE_PROMPTS:
        text = prompt if isinstance(prompt, str) else tokenizer.apply_chat_template(
            prompt, tokenize=False, add_generation_prompt=True)
        out.append(tokenizer(text, add_special_tokens=False)["input_ids"])
    return out


def greedy(model: Any, prompts: list[list[int]]) -> list[list[int]]:
    import torch

    with torch.no_grad():
        return [model.generate(torch.tensor([ids]), max_new_tokens=REFERENCE_NEW_TOKENS,
                               do_sample=False, pad_token_id=model.config.eos_token_id
                               )[0, len(ids):].tolist() for ids in prompts]


def convert(params: dict[str, Any], out: Path, pipes: Any) -> dict[str, Any]:
    path = Path(params["gguf_file"])
    reader = read(path)  # a file that is not what it claims fails before torch is imported
    about = facts(reader, path)

    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    pipes.log.info(f"{path.name}: {about['original_name']} ({about['architecture']}, "
                   f"{about['layers']} layers, quantisation {about['quantization']})")
    tokenizer = build_tokenizer(reader, path)
    del reader  # its memory map; transformers opens the file again
    started = time.monotonic()
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                 dtype=torch.float32)
    model.config.bos_token_id = tokenizer.bos_token_id
    model.config.eos_token_id = tokenizer.eos_token_id
    model.config.pad_token_id = tokenizer.pad_token_id
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id)
    pipes.log.info(f"dequantised in {time.monotonic() - started:.0f} s; recording the reference")
    prompts = prompt_ids(tokenizer)
    reference = greedy(model.eval(), prompts)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    parameters = sum(p.numel() for p in model.parameters())
    record = {**about, "parameters": parameters, "source_file": path.name,
              "reference": {"prompt_ids": prompts, "greedy_ids": reference,
                            "new_tokens": REFERENCE_NEW_TOKENS},
              "sample_reply": tokenizer.decode(reference[0], skip_special_tokens=True)}
    (out / "conversion.json").write_text(json.dumps(record, indent=1))
    pipes.log.info(f"{parameters:,} parameters saved as float32; sample reply: "
                   f"{record['sample_reply']!r}")
    return {k: v for k, v in record.items() if k != "reference"}


def verify(params: dict[str, Any], pipes: Any) -> dict[str, Any]:
    """Replay the reference on the written folder: same prompt ids from the saved tokenizer,
    same greedy tokens from the saved weights, and lossless tokenizer round trips."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(params["model_dir"])
    reference = json.loads((folder / "conversion.json").read_text())["reference"]
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    problems = []
    if prompt_ids(tokenizer) != reference["prompt_ids"]:
        problems.append("the saved tokenizer encodes the reference prompts differently")
    got = greedy(model, reference["prompt_ids"])
    for i, (want, have) in enumerate(zip(reference["greedy_ids"], got, strict=True)):
        if want != have:
            problems.append(f"prompt {i}: greedy tokens {have} differ from the source's {want} "
                            f"({tokenizer.decode(have)!r} vs {tokenizer.decode(want)!r})")
    for text in ROUND_TRIP_TEXTS:
        back = tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"])
        if back != text:
            problems.append(f"tokenizer round trip changes {text!r} into {back!r}")
    pipes.log.info(f"{len(got)} reference prompts replayed; {len(problems)} problem(s)")
    return {"problems": problems, "prompts": len(got),
            "replies": [tokenizer.decode(ids, skip_special_tokens=True) for ids in got]}


def main() -> None:
    with open_pipes() as pipes:
        params = pipes.extras
        if params["mode"] == "verify":
            pipes.report_custom_message(verify(params, pipes))
            return
        out = Path(params["output_dir"])
        out.mkdir(parents=True, exist_ok=True)
        try:
            summary = convert(params, out, pipes)
        except NotAGGUF as exc:
            summary = {"error": str(exc)}
        pipes.report_custom_message(summary)


if __name__ == "__main__":
    main()
