"""Conversations and chat templates, one definition for everything that asks a model a dataset
row: the offline evaluation, the endpoint evaluation, and the control plane when it reshapes
preference rows for a trainer (config/objectives.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def scored_rows(path: Path, limit: int | None = None) -> list[dict[str, Any]]:
    """A split's rows as conversations ending in a good reply, the reference a model's answer is
    scored against: a preference pair's chosen reply, a rated reply labelled good; a reply
    labelled bad is no reference and is left out. `limit` counts lines read."""
    rows = []
    for line in path.read_text().splitlines()[:limit]:
        row = json.loads(line)
        reply = row.get("chosen", row.get("completion") if row.get("label", True) else None)
        if "chosen" in row or "label" in row:
            if reply is None:
                continue
            row = {"messages": [*row["messages"], {"role": "assistant", "content": reply}]}
        rows.append(row)
    return rows


def conversation(row: dict[str, Any]) -> tuple[list[dict[str, str]], str]:
    """The row's messages before its last assistant turn, and that turn (the reference)."""
    messages = row["messages"]
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    return messages[:last], messages[last]["content"].strip()


def question_of(history: list[dict[str, str]]) -> str:
    """The last user turn before the reply: what reports show as the question."""
    return next((m["content"] for m in reversed(history) if m["role"] == "user"), "")


def turn_end(tokenizer: Any) -> list[str]:
    """What the chat template writes after an assistant reply (`<|end|>`, `<|eot_id|>`,
    `<|im_end|>`...): where generation stops, besides the tokenizer's EOS."""
    marker = "\x1fREPLY\x1f"
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "q"}, {"role": "assistant", "content": marker}],
        tokenize=False)
    after = text.split(marker, 1)[1].split()
    return [after[0]] if after else []
