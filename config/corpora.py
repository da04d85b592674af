"""The `corpora` section: document sources for RAG and their retrieval check."""

from __future__ import annotations

from typing import Literal

from pydantic import (
    Field,
    model_validator,
)

from config.common import Name, Strict
from config.datasets import FileSource, S3Source, WatchSpec


class GeneratedCorpus(Strict):
    generator: Literal["company_filings"]
    documents: int = Field(60, ge=1)
    seed: int = 0


CorpusSource = GeneratedCorpus | FileSource | S3Source


class RetrievalCheck(Strict):
    """The index's `retrieval_quality` check over the corpus's questions. It never stops an
    index from following its source: a warning by default."""

    min_hit_rate: float = Field(0.8, ge=0, le=1, description="hit@top_k the questions must reach")
    blocking: bool = Field(False, description="fail the run (and what depends on the index) "
                                              "instead of warning")


class CorpusSpec(Strict):
    source: CorpusSource
    questions: str | None = Field(
        None, description="JSONL of {question, source} pairs scored as hit@k on each index")
    retrieval_check: RetrievalCheck = RetrievalCheck()
    watch: WatchSpec = WatchSpec()
    chunk_size: int = Field(256, ge=32)
    chunk_overlap: int = Field(32, ge=0)
    embedding_model: str = Field(
        "bundled:all-MiniLM-L6-v2", description="'bundled:all-MiniLM-L6-v2' or a local model dir"
    )
    top_k: int = Field(5, ge=1)
    transcribe: Name | None = Field(
        None, description="a speech deployment that transcribes the source's recordings (wav, "
                          "flac, mp3, ogg, webm, m4a) into timestamped documents")

    @model_validator(mode="after")
    def _overlap(self) -> CorpusSpec:
        if self.chunk_overlap >= self.chunk_size:
            raise ValueError("chunk_overlap must be smaller than chunk_size")
        return self


def corpus_problems(corpora: dict[str, CorpusSpec], speech_deployments: list[str]) -> list[str]:
    problems: list[str] = []
    for name, c in corpora.items():
        if len(name) < 3 or not name[-1].isalnum():  # the name is its Chroma collection's
            problems.append(f"corpora.{name}: Chroma collection names need at least 3 "
                            "characters and must end with a letter or digit")
        if c.transcribe is not None and c.transcribe not in speech_deployments:
            problems.append(f"corpora.{name}.transcribe: '{c.transcribe}' is not a deployment "
                            "of a speech model (declared: "
                            f"{', '.join(speech_deployments) or 'none'})")
    return problems
