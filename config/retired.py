"""Keys and values factory.yaml once accepted and no longer does: one row each, so a project
file written against an older version fails with what changed and what to write instead, not
with a bare "unknown key" or "Input should be ..."."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Retired:
    path: str  # dotted key path; `*` matches any name (evaluations.*.local_tasks)
    value: str | None  # a list item or value that was retired; None: the whole key
    since: str  # when it changed (the commit's date), so a reader can find the change
    what: str  # what happened to it
    instead: str  # what to write now


RETIRED = [
    Retired("evaluations.*.local_tasks", "generation", "2026-11-29",
            "generation metrics (exact match, ROUGE-L, BLEU) are now always measured from the "
            "test split's own conversations, so the option was removed",
            "remove 'generation' from local_tasks (leave [multiple_choice] or delete the key)"),
]


def _walk(raw: Any, parts: list[str], at: list[str]) -> list[tuple[str, Any]]:
    """(dotted path, value) of every key of `raw` matching the pattern `parts`."""
    if not parts:
        return [(".".join(at), raw)]
    if not isinstance(raw, dict):
        return []
    head, *rest = parts
    return [hit for key, value in raw.items() if head in ("*", str(key))
            for hit in _walk(value, rest, [*at, str(key)])]


def retired_uses(raw: dict[str, Any], table: list[Retired] = RETIRED) -> list[str]:
    """One message per retired key or value the raw project file still uses."""
    messages = []
    for row in table:
        for path, value in _walk(raw, row.path.split("."), []):
            values = value if isinstance(value, list) else [value]
            if row.value is not None and row.value not in values:
                continue
            used = f"{path}: {row.value!r}" if row.value is not None else path
            messages.append(f"{used} was retired ({row.since}): {row.what}; {row.instead}")
    return messages
