"""The two kinds of bad input: a bad row (quarantined, the rest goes on) and a bad file (stop)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any


class JsonLine(str):
    """A parsed record kept as its JSON text (a fifth of the memory of the dicts: a million
    duplicates fit) and written to the quarantine as the object again."""


@dataclass(frozen=True, slots=True)
class Rejection:
    """One quarantined row: where it came from, what is wrong with it and how to fix it."""

    file: str
    row: int  # 1-based line (JSONL/CSV: physical line) or record number
    reason: str  # stable machine-readable code, e.g. invalid_json, missing_field
    field: str | None
    detail: str
    fix: str
    record: Any = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        if isinstance(self.record, JsonLine):
            out["record"] = json.loads(self.record)
        elif isinstance(self.record, str | bytes):
            out["record"] = self.record[:500] if isinstance(self.record, str) else repr(
                self.record[:200])
        return out


class InputFileError(ValueError):
    """A file that is not what it claims to be: named, with the problem and the fix."""

    def __init__(self, file: str, problem: str, fix: str) -> None:
        super().__init__(f"{file}: {problem}. Fix: {fix}")
        self.file, self.problem, self.fix = file, problem, fix
