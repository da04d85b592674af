"""A GGUF language model (llama.cpp, Ollama, LM Studio files) as a Hugging Face folder.

Weights: dequantised by transformers' own GGUF loader, saved as float32 (bf16 is 30x slower on
CPUs without AVX-512 BF16, for training and serving alike). Tokenizer: built from the file's own
fields (`tokenizer.ggml.tokens`, `.merges`, `.token_type`, `.pre`, the special token ids and
`tokenizer.chat_template`), because the tokenizer transformers derives from a GGUF adds a BOS
token the model never saw after `<|im_start|>` and can take the wrong end-of-turn token.

`mode: convert` writes the folder and `conversion.json`: the file's facts (name, licence,
quantisation) and references taken from the file by paths other than the conversion's own:
tensors dequantised by the `gguf` package itself, token ids from the tokenizer transformers
derives from the file, and the greedy tokens the GGUF-loaded model gives on fixed prompts.
`mode: verify` loads the written folder in a fresh process and compares it with all three: the
base model's `reproduces_source` check.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psutil

from worker import conversion

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
# llama.cpp's pre-tokenizer names (`tokenizer.ggml.pre`, listed in its vocabulary code) whose
# splitting rules we rebuild exactly, and whether each splits digits one per token (SmolLM's
# rule). 'default' is not GPT-2's rule (it splits punctuation and digit runs first): refused.
DIGITS_SPLIT_BY_PRE = {"smollm": True, "gpt2": False}
CONTROL, USER_DEFINED = 3, 4  # llama.cpp token types kept whole by its tokenizer
# Tensors stored without llama.cpp's q/k row permutation, so the gguf package's dequantised
# array must equal the saved Hugging Face tensor: the embedding and the first MLP projection.
CHECKED_TENSORS = {"token_embd.weight": "model.embed_tokens.weight",
                   "blk.0.ffn_down.weight": "model.layers.0.mlp.down_proj.weight"}
TENSOR_TOLERANCE = 1e-6
MEMORY_HEADROOM = 2.5  # float32 weights, transformers' copy while loading, the reference run


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
    from transformers.integrations.ggml import GGUF_CONFIG_MAPPING

    if arch not in GGUF_CONFIG_MAPPING:
        raise NotAGGUF(f"{path}: architecture {arch!r} cannot be loaded by transformers' GGUF "
                       f"reader (it reads {', '.join(sorted(GGUF_CONFIG_MAPPING))})")
    for key in ("tokenizer.ggml.merges", "tokenizer.ggml.token_type",
                "tokenizer.ggml.eos_token_id"):
        if field(reader, key) is None:
            raise NotAGGUF(f"{path} has no {key}: its tokenizer cannot be rebuilt")
    size = len(field(reader, "tokenizer.ggml.tokens"))
    for key in ("bos", "eos", "unknown", "padding", "eot"):
        index = field(reader, f"tokenizer.ggml.{key}_token_id")
        if index is not None and not 0 <= index < size:
            raise NotAGGUF(f"{path}: tokenizer.ggml.{key}_token_id {index} is outside its "
                           f"{size}-token vocabulary")
    needed = MEMORY_HEADROOM * 4 * sum(int(t.n_elements) for t in reader.tensors)
    available = psutil.virtual_memory().available
    if needed > available:
        raise NotAGGUF(f"{path}: converting to float32 needs about {needed / 2**30:.1f} GiB of "
                       f"memory, {available / 2**30:.1f} GiB are free; convert it on a bigger "
                       "machine (compute.kind) or choose a smaller model")
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
        "chat_template": field(reader, "tokenizer.chat_template") is not None,
    }


def build_tokenizer(reader: Any, path: Path) -> Any:
    """A fast tokenizer from the file's vocabulary, merges, special tokens and chat template."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    pre = field(reader, "tokenizer.ggml.pre", "default")
    if pre not in DIGITS_SPLIT_BY_PRE:
        raise NotAGGUF(f"{path}: pre-tokenizer {pre!r} is not supported yet (known: "
                       f"{', '.join(sorted(DIGITS_SPLIT_BY_PRE))}); its splitting rules decide "
                       "every token id, so converting it approximately would change the model")
    tokens: list[str] = field(reader, "tokenizer.ggml.tokens")
    types: list[int] = field(reader, "tokenizer.ggml.token_type")
    merges = [tuple(m.split(" ", 1)) for m in field(reader, "tokenizer.ggml.merges")]
    vocab = {token: i for i, token in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
    splits = [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
    if DIGITS_SPLIT_BY_PRE[pre]:
        splits.insert(0, pre_tokenizers.Digits(individual_digits=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence(splits)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t, kind in zip(tokens, types, strict=True) if kind == CONTROL])
    tok.add_tokens([AddedToken(t, special=False, normalized=False)
                    for t, kind in zip(tokens, types, strict=True) if kind == USER_DEFINED])

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
    """The reference prompts as ids; chats only where the file has a chat template (base
    models' GGUFs mostly have none)."""
    out = []
    for prompt in REFERENCE_PROMPTS:
        if isinstance(prompt, str):
            text = prompt
        elif tokenizer.chat_template:
            text = tokenizer.apply_chat_template(prompt, tokenize=False,
                                                 add_generation_prompt=True)
        else:
            continue
        out.append(tokenizer(text, add_special_tokens=False)["input_ids"])
    return out


def source_tensors(reader: Any) -> dict[str, list[float]]:
    """A few tensors as the gguf package itself dequantises them (not transformers' loader):
    their sum, absolute sum and first values, for the saved weights to be compared with."""
    from gguf.quants import dequantize

    found = {t.name: t for t in reader.tensors}
    out = {}
    for name, hf_name in CHECKED_TENSORS.items():
        if name in found:
            array = dequantize(found[name].data, found[name].tensor_type).astype("float64")
            out[hf_name] = [float(array.sum()), float(abs(array).sum()),
                            *map(float, array.ravel()[:8])]
    return out


def source_token_ids(path: Path) -> dict[str, list[int]]:
    """Ids of fixed texts from the tokenizer transformers derives from the file (which adds a
    BOS the model never saw; dropped here), to hold ours against an independent build."""
    from transformers import AutoTokenizer

    theirs = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    out = {}
    for text in ROUND_TRIP_TEXTS:
        ids = theirs(text)["input_ids"]
        out[text] = ids[1:] if theirs.bos_token_id is not None and ids[:1] == [
            theirs.bos_token_id] and theirs.add_bos_token else ids
    return out


def tensor_digest(tensor: Any) -> list[float]:
    flat = tensor.double().flatten()
    return [float(flat.sum()), float(flat.abs().sum()), *map(float, flat[:8])]


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
    tensors = source_tensors(reader)
    ends = [tokenizer.eos_token_id, *(i for i in [field(reader, "tokenizer.ggml.eot_token_id")]
                                      if i is not None and i != tokenizer.eos_token_id)]
    del reader  # its memory map; transformers opens the file again
    token_ids = source_token_ids(path)
    started = time.monotonic()
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                 dtype=torch.float32)
    model.config.bos_token_id = tokenizer.bos_token_id
    model.config.eos_token_id = tokenizer.eos_token_id
    model.config.pad_token_id = tokenizer.pad_token_id
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=ends if len(ends) > 1 else ends[0],
        pad_token_id=tokenizer.pad_token_id)
    pipes.log.info(f"dequantised in {time.monotonic() - started:.0f} s; recording the reference")
    prompts = prompt_ids(tokenizer)
    reference = greedy(model.eval(), prompts)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    parameters = sum(p.numel() for p in model.parameters())
    record = {**about, "parameters": parameters, "source_file": path.name,
              "reference": {"prompt_ids": prompts, "greedy_ids": reference,
                            "new_tokens": REFERENCE_NEW_TOKENS, "tensors": tensors,
                            "token_ids": token_ids},
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
    for text, theirs in reference["token_ids"].items():
        ours = tokenizer(text, add_special_tokens=False)["input_ids"]
        if ours != theirs:
            problems.append(f"{text!r}: ids {ours[:12]} differ from the file's own tokenizer's "
                            f"{theirs[:12]}")
        if tokenizer.decode(ours) != text:
            problems.append(f"tokenizer round trip changes {text!r} into "
                            f"{tokenizer.decode(ours)!r}")
    saved = model.state_dict()
    for name, digest in reference["tensors"].items():
        ours = tensor_digest(saved[name])
        if any(abs(a - b) > TENSOR_TOLERANCE * max(1.0, abs(b)) for a, b in zip(
                ours, digest, strict=True)):
            problems.append(f"{name} differs from the file's tensor as the gguf package "
                            f"dequantises it (sum {ours[0]:.6g} vs {digest[0]:.6g})")
    pipes.log.info(f"{len(got)} reference prompts replayed; {len(problems)} problem(s)")
    return {"problems": problems, "prompts": len(got), "tensors": len(reference["tensors"]),
            "replies": [tokenizer.decode(ids, skip_special_tokens=True) for ids in got]}


if __name__ == "__main__":
    conversion.run(convert, verify, NotAGGUF)
