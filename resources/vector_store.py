"""Chroma: embedded (a persistent folder) by default, a Chroma server over HTTP as configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg

from resources.retrieval import chroma_client, mark_written


class ChromaResource(dg.ConfigurableResource):
    """`path` for the embedded client; `host`/`port` switch to the HTTP client."""

    path: str = ".factory/chroma"
    project_root: str = "."
    host: str | None = None
    port: int = 8000

    def client(self) -> Any:
        return chroma_client(Path(self.project_root, self.path).resolve(), self.host, self.port)

    def mark_written(self) -> None:
        """Tell readers in other processes that an embedded store changed (a server needs no
        telling)."""
        if not self.host:
            mark_written(Path(self.project_root, self.path).resolve())

    @property
    def location(self) -> str:
        if self.host:
            return f"http://{self.host}:{self.port}"
        return str(Path(self.project_root, self.path).resolve())
