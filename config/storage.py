"""The `storage` section: where artifacts and work files go."""

from __future__ import annotations

from pydantic import (
    Field,
    field_validator,
)

from config.common import Strict


class Storage(Strict):
    object_store: str = Field(
        "file://.factory/store",
        description="file://<dir> (embedded default) or s3://<bucket>/<prefix> (production)",
    )
    work_dir: str = Field(".factory", description="local caches, engine state, Chroma files")
    s3_endpoint_url: str | None = Field(None, description="S3-compatible endpoint (MinIO, moto)")
    chroma_url: str | None = Field(
        None, description="http://host:port of a Chroma server; default: embedded in work_dir")

    @field_validator("object_store")
    @classmethod
    def _scheme(cls, v: str) -> str:
        if not (v.startswith("file://") or v.startswith("s3://")):
            raise ValueError("must start with file:// (local directory) or s3:// (bucket/prefix)")
        return v
