"""The wire format: OpenAI-compatible request models (validated before anything goes upstream)
and error bodies. Unknown request fields are dropped, never forwarded; vLLM's own sampling
extras (what the openai SDK sends as `extra_body`) are known fields, validated like the rest.
"""

from __future__ import annotations

import datetime
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

# Matched whole (re.fullmatch): `$` alone would let a trailing newline through.
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
INT32 = 2**31 - 1
DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


def valid_name(name: str) -> bool:
    return MODEL_NAME.fullmatch(name) is not None


def valid_day(day: str) -> bool:
    """A calendar day written YYYY-MM-DD: 2026-13-45 has the shape but is no day."""
    if not DAY.fullmatch(day):
        return False
    try:
        datetime.date.fromisoformat(day)
    except ValueError:
        return False
    return True


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class GatewayError(Exception):
    """Raised anywhere in the logic; rendered as an OpenAI error body with its status."""

    def __init__(self, status: int, message: str, type_: str, code: str | None = None,
                 param: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = (
            status, message, type_, code, param)
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return ErrorResponse(error=ErrorDetail(message=self.message, type=self.type,
                                               param=self.param, code=self.code)).model_dump()


def model_not_found(name: str) -> GatewayError:
    # The same answer for "does not exist" and "not yours": names must not leak across projects.
    shown = name if valid_name(name) else "(invalid name)"
    return GatewayError(404, f"The model '{shown}' does not exist or you do not have access "
                             "to it.", "invalid_request_error", "model_not_found", "model")


class Request(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(max_length=256)


class StreamOptions(BaseModel):
    """Only what OpenAI defines; anything else is dropped, not forwarded."""

    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class Sampling(Request):
    max_tokens: int | None = Field(None, ge=1, le=INT32)
    max_completion_tokens: int | None = Field(
        None, ge=1, le=INT32, description="OpenAI's newer name for max_tokens (LangChain "
                                          "sends it); the smaller of the two applies")
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    n: int = Field(1, ge=1, le=INT32)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    user: str | None = Field(None, max_length=256)
    # vLLM's sampling extras
    top_k: int | None = Field(None, ge=-1, le=1_000_000)
    min_p: float | None = Field(None, ge=0, le=1)
    repetition_penalty: float | None = Field(None, gt=0, le=2)
    min_tokens: int | None = Field(None, ge=0, le=INT32)
    ignore_eos: bool | None = None
    stop_token_ids: list[Annotated[int, Field(ge=0, le=10_000_000)]] | None = Field(
        None, max_length=16)

    @model_validator(mode="after")
    def _min_within_max(self) -> Sampling:
        if self.max_completion_tokens is not None:
            self.max_tokens = min(self.max_tokens or INT32, self.max_completion_tokens)
            self.max_completion_tokens = None
        if self.min_tokens and self.max_tokens and self.min_tokens > self.max_tokens:
            raise ValueError("min_tokens may not exceed max_tokens")
        return self

    @field_validator("stop")
    @classmethod
    def _stop(cls, v: str | list[str] | None) -> str | list[str] | None:
        if isinstance(v, list) and (len(v) > 4 or any(len(s) > 64 for s in v)):
            raise ValueError("at most 4 stop sequences of up to 64 characters")
        if isinstance(v, str) and len(v) > 64:
            raise ValueError("stop sequences are at most 64 characters")
        return v


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant"]
    content: str = Field(max_length=1_000_000)


class RagOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    collection: str = Field(max_length=128)
    top_k: int = Field(4, ge=1, le=20)
    mmr: float | None = Field(None, ge=0, le=1)


METADATA_PAIRS, METADATA_KEY, METADATA_VALUE = 16, 64, 512


def checked_metadata(metadata: dict[str, str] | None) -> dict[str, str] | None:
    """OpenAI's bounds on `metadata`: at most 16 pairs, keys up to 64 characters, values up to
    512, no control characters (they are filters in a query string later)."""
    if metadata is None:
        return None
    if len(metadata) > METADATA_PAIRS:
        raise ValueError(f"metadata has at most {METADATA_PAIRS} pairs")
    for key, value in metadata.items():
        if not 0 < len(key) <= METADATA_KEY or len(value) > METADATA_VALUE:
            raise ValueError(f"metadata keys are 1 to {METADATA_KEY} characters and values at "
                             f"most {METADATA_VALUE}")
        if any(ord(c) < 32 for c in key + value):
            raise ValueError("metadata may not hold control characters")
    return metadata


Metadata = Annotated[dict[str, str] | None, AfterValidator(checked_metadata)]


class ChatCompletionRequest(Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    store: bool = Field(False, description="keep this chat (if the project's capture policy "
                                           "allows): GET /v1/chat/completions lists it")
    metadata: Metadata = Field(None, description="up to 16 string pairs, filters of the list")
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    compare_with: str | None = Field(None, max_length=256,
                                     description="also answer with this model, side by side")
    rag: RagOptions | None = None


class CompletionRequest(Sampling):
    prompt: str | list[str] = Field(min_length=1)
    logprobs: int | None = Field(None, ge=0, le=20)
    echo: bool | None = None


class MetadataUpdate(BaseModel):
    """POST /v1/chat/completions/{id}: the stored completion's metadata, replaced whole."""

    model_config = ConfigDict(extra="ignore")

    metadata: Metadata = None


class FeedbackCreate(BaseModel):
    """What a person says about a stored completion; any of these, at least one."""

    model_config = ConfigDict(extra="forbid")

    rating: Literal["up", "down"] | None = None
    score: float | None = Field(None, ge=0, le=1)
    comment: str | None = Field(None, max_length=4000)
    correction: str | None = Field(None, min_length=1, max_length=32_000,
                                   description="the reply it should have been")
    better_than: str | None = Field(None, max_length=96,
                                    description="another stored answer to the same prompt")

    @model_validator(mode="after")
    def _something(self) -> FeedbackCreate:
        if all(v is None for v in (self.rating, self.score, self.comment, self.correction,
                                   self.better_than)):
            raise ValueError("give a rating, a score, a comment, a correction or better_than")
        return self


class EmbeddingRequest(Request):
    input: str | list[str] = Field(min_length=1)
    encoding_format: Literal["float", "base64"] | None = None


# -- the admin API --------------------------------------------------------------------------
# Names people and scripts choose: printable, no control characters, matched whole.
USER = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9@._+-]*$")
PROJECT_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
PROJECT = PROJECT_NAME.pattern.join("^$")


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user: str = USER
    name: str = Field("default", min_length=1, max_length=64,
                      pattern=r"^[A-Za-z0-9][A-Za-z0-9._ -]*$")
    rpm: int | None = Field(None, ge=1, le=INT32, description="clamped to the project's")
    tpm: int | None = Field(None, ge=1, le=INT32, description="clamped to the project's")


class QuotaUpdate(BaseModel):
    """Ceilings of a project; fields left out keep their value."""

    model_config = ConfigDict(extra="forbid")

    rpm: int | None = Field(None, ge=1, le=INT32)
    tpm: int | None = Field(None, ge=1, le=INT32)
    max_keys: int | None = Field(None, ge=1, le=100_000)
    max_in_flight: int | None = Field(None, ge=1, le=100_000)
    audio_seconds_per_day: int | None = Field(None, ge=0, le=INT32)
    capture_rows: int | None = Field(None, ge=0, le=INT32)
    capture_bytes: int | None = Field(None, ge=0, le=INT32)
    capture_days: int | None = Field(None, ge=1, le=3650)


class ProjectCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=PROJECT)
    owner: str = USER
    log_prompts: bool = False
    quota: QuotaUpdate | None = None


class MemberAdd(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user: str = USER
    role: Literal["owner", "member", "viewer"]


class CapturePolicy(BaseModel):
    """What a project's endpoint keeps: nothing (off), chats sent with `store: true`
    (request) or every chat (all); PII scrubbed before it is written when asked."""

    model_config = ConfigDict(extra="forbid")

    policy: Literal["off", "request", "all"]
    scrub_pii: bool = False


class CompletionsPurge(BaseModel):
    """Erasure (`factory forget`): stored completions whose text contains any of these, or
    that a user made; their feedback goes with them."""

    model_config = ConfigDict(extra="forbid")

    contains: list[Annotated[str, Field(min_length=3, max_length=2048,
                                        pattern=r"^[^\x00-\x1f]*$")]] = Field(
        default_factory=list, max_length=1000)
    user: str | None = Field(None, min_length=1, max_length=128,
                             pattern=r"^[A-Za-z0-9][A-Za-z0-9@._+-]*$")
    dry_run: bool = False


class GrantCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=128, pattern=MODEL_NAME.pattern.join("^$"))
    kind: Literal["model", "collection"] = "model"
