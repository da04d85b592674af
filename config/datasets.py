"""The `datasets` section: sources (files, S3, Hugging Face, a corpus, the demo generator) and what
curation does with them."""

from __future__ import annotations

from collections.abc import Collection
from typing import Literal

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from config.base_models import BaseModelSpec, language_model_problems
from config.common import Name, Strict, reference_problems


class GeneratedSource(Strict):
    """Demo data made by a generator shipped with the project."""

    generator: Literal["math_word_problems"]
    rows: int = Field(1000, ge=10)
    seed: int = 0


class FileSource(Strict):
    """Local files: a file, a folder or a glob, relative to the config file."""

    path: str


class S3Source(Strict):
    """Every supported file under an S3 prefix (endpoint: storage.s3_endpoint_url)."""

    s3: str

    @field_validator("s3")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith("s3://"):
            raise ValueError("write it as s3://<bucket>/<prefix>")
        return v


class HFSource(Strict):
    """A Hugging Face dataset by id (needs the network) or a local dataset folder."""

    hf: str
    name: str | None = None
    split: str = "train"
    revision: str | None = None


class CorpusDatasetSource(Strict):
    """The documents of one of this project's corpora as its last materialization published
    them (parsed files; recordings as the speech model transcribed them, without timestamps),
    one {"text"} record each: recordings and documents become continued-pretraining text."""

    corpus: Name


class TrafficSource(Strict):
    """Chats a gateway project kept (stored completions) and what people said about them:
    corrections and replies rated up make SFT rows, thumbs KTO rows, `better_than` choices and
    corrections DPO pairs (ingest/traffic.py). Read through the gateway's admin API."""

    traffic: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$", description="gateway project")
    model: str | None = Field(None, description="only chats answered by this model or adapter")
    since_days: int | None = Field(None, ge=1, description="only chats of the last N days")
    metadata: dict[str, str] = Field(default_factory=dict,
                                     description="only chats whose metadata has these pairs")
    good_score: float = Field(0.8, ge=0, le=1,
                              description="a score at least this counts as a reply rated up")
    rebuild_after: int = Field(20, ge=1, description="new feedback that rebuilds the dataset "
                                                     "(and what trains on it)")
    poll_s: int = Field(60, ge=5, description="seconds between looks for new feedback")


DatasetSource = (GeneratedSource | FileSource | S3Source | HFSource | CorpusDatasetSource
                 | TrafficSource)


class Split(Strict):
    val: float = Field(0.05, ge=0, lt=0.5)
    test: float = Field(0.1, gt=0, lt=0.5)
    seed: int = 0
    stratify_by: str | None = Field(None, description="a field of the raw rows, e.g. 'category'")


class PiiSpec(Strict):
    scrub: bool = False
    kinds: list[Literal["email", "phone", "ssn", "card"]] = Field(
        default_factory=lambda: ["email", "phone", "ssn", "card"])


class DedupeSpec(Strict):
    near: bool = True
    threshold: float = Field(0.85, gt=0.3, le=1.0, description="MinHash Jaccard threshold")


class QualitySpec(Strict):
    max_rejected_fraction: float = Field(0.1, ge=0, le=1)
    min_train: int = Field(1, ge=0)
    min_val: int = Field(0, ge=0)
    min_test: int = Field(1, ge=0)


class WatchSpec(Strict):
    """A sensor that polls a folder or S3 source and starts a run when files change."""

    enabled: bool = True
    interval_s: int = Field(30, ge=5, description="seconds between polls")


class DatasetSpec(Strict):
    kind: Literal["sft", "preference", "feedback", "pretrain"] = "sft"
    sources: list[DatasetSource] = Field(min_length=1)
    format: Literal["auto", "openai", "sharegpt", "alpaca", "prompt_completion", "preference",
                    "feedback", "text"] = "auto"
    field_map: dict[str, str] = Field(default_factory=dict,
                                      description="canonical field -> your column")
    base_model: str | None = Field(None, description="tokenizer + chat template for length stats")
    max_tokens: int | None = Field(None, ge=16, description="default: the base model's context")
    over_length: Literal["truncate", "quarantine"] = "quarantine"
    block_size: int = Field(256, ge=16, description="pretrain: tokens per packed block")
    pii: PiiSpec = PiiSpec()
    dedupe: DedupeSpec = DedupeSpec()
    split: Split = Split()
    quality: QualitySpec = QualitySpec()
    watch: WatchSpec | None = Field(
        None, description="re-materialize (and retrain downstream) when a file/S3 source changes")

    @model_validator(mode="after")
    def _watch_needs_files(self) -> DatasetSpec:
        if self.watch and not any(isinstance(s, FileSource | S3Source) for s in self.sources):
            raise ValueError("watch: needs a path or s3 source to poll; the others never change")
        return self

    @model_validator(mode="after")
    def _corpus_is_text(self) -> DatasetSpec:
        if self.kind != "pretrain" and any(isinstance(s, CorpusDatasetSource)
                                           for s in self.sources):
            raise ValueError("a {corpus: ...} source gives text without prompts or answers; "
                             "use it in a kind: pretrain dataset")
        return self

    @model_validator(mode="after")
    def _traffic_is_rated(self) -> DatasetSpec:
        if self.kind == "pretrain" and any(isinstance(s, TrafficSource) for s in self.sources):
            raise ValueError("a {traffic: ...} source gives rated chats; use it in a kind: sft, "
                             "preference or feedback dataset")
        return self

    @model_validator(mode="after")
    def _pretrain_needs_tokenizer(self) -> DatasetSpec:
        if self.kind == "pretrain" and not self.base_model:
            raise ValueError("kind: pretrain packs token blocks; set base_model for its tokenizer")
        return self


def dataset_problems(datasets: dict[str, DatasetSpec], base_models: dict[str, BaseModelSpec],
                     corpora: Collection[str]) -> list[str]:
    problems: list[str] = []
    for name, d in datasets.items():
        if d.base_model:
            problems += language_model_problems(f"datasets.{name}.base_model", d.base_model,
                                                base_models)
        for i, source in enumerate(d.sources):
            if isinstance(source, CorpusDatasetSource):
                problems += reference_problems(f"datasets.{name}.sources[{i}].corpus",
                                               source.corpus, corpora, "corpora")
    return problems
