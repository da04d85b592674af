"""Every supported row format normalised to one internal schema.

- sft: {"messages": [{"role", "content"}, ...]} ending with an assistant turn
- preference: {"messages": [... ending with a user turn], "chosen": str, "rejected": str}
- feedback: {"messages": [... ending with a user turn], "completion": str, "label": bool}
  (one reply rated good or bad, unpaired: what KTO trains on)
- pretrain: {"text": str}

Recognised inputs: OpenAI chat (`messages`), ShareGPT (`conversations` of from/value), alpaca
(`instruction`/`input`/`output`), prompt/completion, preference triples (prompt/chosen/rejected),
rated replies (prompt/completion/label, or a conversation with a `label`), plain `text`;
anything else through an explicit `field_map` (canonical name -> your column).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["sft", "preference", "feedback", "pretrain"]
ROLES = {"system", "user", "assistant"}
# how people write "good" and "bad" in rating exports, lower-cased (True/False also read 1/0)
LABELS = {True: True, False: False, "true": True, "false": False,
          "good": True, "bad": False, "up": True, "down": False, "thumbs_up": True,
          "thumbs_down": False, "positive": True, "negative": False, "1": True, "0": False}
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "bot": "assistant", "model": "assistant", "system": "system"}


@dataclass(frozen=True)
class Invalid:
    reason: str
    field: str | None
    detail: str
    fix: str


def detect(record: dict[str, Any]) -> str | None:
    if "label" in record:
        return "feedback"
    if "messages" in record:
        return "openai"
    if "conversations" in record:
        return "sharegpt"
    if "chosen" in record or "rejected" in record:
        return "preference"
    if "instruction" in record:
        return "alpaca"
    if "prompt" in record or "completion" in record:
        return "prompt_completion"
    if "text" in record:
        return "text"
    return None


def _str_field(record: dict[str, Any], name: str, optional: bool = False) -> str | Invalid:
    if name not in record or record[name] is None:
        if optional:
            return ""
        return Invalid("missing_field", name, f"field '{name}' is missing",
                       f"add '{name}' or map your column to it with field_map")
    value = record[name]
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        return Invalid("wrong_type", name, f"'{name}' is a {type(value).__name__}, expected text",
                       f"make '{name}' a string")
    if not optional and not value.strip():
        return Invalid("empty_field", name, f"'{name}' is empty",
                       f"fill in '{name}' or drop the row")
    return value


def _messages(value: Any, field: str, sharegpt: bool = False) -> list[dict[str, str]] | Invalid:
    if not isinstance(value, list):
        return Invalid("wrong_type", field, f"'{field}' is a {type(value).__name__}, expected a "
                       "list of turns", f"make '{field}' a JSON list")
    if not value:
        return Invalid("empty_messages", field, f"'{field}' has no turns",
                       "add at least a user and an assistant turn")
    role_key, text_key = ("from", "value") if sharegpt else ("role", "content")
    out = []
    for i, turn in enumerate(value):
        where = f"{field}[{i}]"
        if not isinstance(turn, dict):
            return Invalid("wrong_type", where, f"turn is a {type(turn).__name__}",
                           f"make each turn an object with {role_key}/{text_key}")
        role = turn.get(role_key)
        role = SHAREGPT_ROLES.get(str(role).lower()) if sharegpt else role
        if role not in ROLES:
            return Invalid("bad_role", f"{where}.{role_key}", f"role {turn.get(role_key)!r} is "
                           "not system/user/assistant", "use system, user or assistant")
        content = turn.get(text_key)
        if not isinstance(content, str):
            return Invalid("wrong_type", f"{where}.{text_key}",
                           f"content is a {type(content).__name__}, expected text",
                           "make every turn's content a string")
        if not content.strip():
            return Invalid("empty_content", f"{where}.{text_key}", "turn has no text",
                           "fill in the turn or remove it")
        out.append({"role": role, "content": content})
    return out


def _as_sft(messages: list[dict[str, str]], field: str) -> dict[str, Any] | Invalid:
    if messages[-1]["role"] != "assistant":
        return Invalid("no_assistant_turn", field, "the last turn is not the assistant's",
                       "end each conversation with the assistant's answer")
    if not any(m["role"] == "user" for m in messages):
        return Invalid("no_user_turn", field, "no user turn", "add the user's message")
    return {"messages": messages}


def normalise(record: dict[str, Any], kind: Kind, fmt: str = "auto",
              field_map: dict[str, str] | None = None) -> dict[str, Any] | Invalid:
    if field_map:
        missing = [src for src in field_map.values() if src not in record]
        if missing:
            return Invalid("missing_field", missing[0], f"mapped column '{missing[0]}' is missing",
                           "fix field_map or the data")
        record = {**record, **{canon: record[src] for canon, src in field_map.items()}}
    fmt = detect(record) if fmt == "auto" else fmt
    if fmt is None:
        return Invalid("unknown_format", None, f"no known fields among {sorted(record)[:8]}",
                       "declare `format:` and a `field_map:` for this dataset")
    if kind == "pretrain":
        text = _str_field(record, "text")
        return text if isinstance(text, Invalid) else {"text": text}
    if kind == "preference":
        return _preference(record)
    if kind == "feedback":
        return _feedback(record)
    if fmt in ("openai", "sharegpt"):
        field = "messages" if fmt == "openai" else "conversations"
        messages = _messages(record[field], field, sharegpt=fmt == "sharegpt")
        return messages if isinstance(messages, Invalid) else _as_sft(messages, field)
    if fmt == "alpaca":
        parts = [_str_field(record, "instruction"), _str_field(record, "input", optional=True),
                 _str_field(record, "output")]
        bad = next((p for p in parts if isinstance(p, Invalid)), None)
        if bad:
            return bad
        instruction, extra, output = parts
        user = f"{instruction}\n\n{extra}" if str(extra).strip() else instruction
        return {"messages": [{"role": "user", "content": user},
                             {"role": "assistant", "content": output}]}
    if fmt == "prompt_completion":
        prompt, completion = _str_field(record, "prompt"), _str_field(record, "completion")
        bad = next((p for p in (prompt, completion) if isinstance(p, Invalid)), None)
        return bad or {"messages": [{"role": "user", "content": prompt},
                                    {"role": "assistant", "content": completion}]}
    return Invalid("unknown_format", None, f"format {fmt!r} does not give {kind} examples",
                   f"use a {kind} format or change the dataset's kind")


def _prompt(record: dict[str, Any]) -> list[dict[str, str]] | Invalid:
    """The turns a reply answers: `prompt` as text or turns, or (the normal form's name, so
    curated rows re-validate) `messages`."""
    field = "prompt" if "prompt" in record or "messages" not in record else "messages"
    prompt = record.get(field)
    if prompt is None:
        return Invalid("missing_field", "prompt", "field 'prompt' is missing",
                       "add the prompt (text or a list of turns)")
    if isinstance(prompt, list):
        return _messages(prompt, field)
    text = _str_field(record, "prompt")
    return text if isinstance(text, Invalid) else [{"role": "user", "content": text}]


def _preference(record: dict[str, Any]) -> dict[str, Any] | Invalid:
    messages = _prompt(record)
    if isinstance(messages, Invalid):
        return messages
    answers = {}
    for name in ("chosen", "rejected"):
        value = record.get(name)
        if isinstance(value, list):  # a conversation: take its final assistant turn
            turns = _messages(value, name)
            if isinstance(turns, Invalid):
                return turns
            value = turns[-1]["content"]
        text = _str_field({name: value}, name)
        if isinstance(text, Invalid):
            return text
        answers[name] = text
    if answers["chosen"].strip() == answers["rejected"].strip():
        return Invalid("identical_pair", "rejected", "chosen and rejected are the same",
                       "a preference pair needs two different answers")
    return {"messages": messages, **answers}


def _feedback(record: dict[str, Any]) -> dict[str, Any] | Invalid:
    """One rated reply: prompt/completion/label (TRL's KTO layout), or a conversation whose
    last assistant turn is the rated reply."""
    raw = record.get("label")
    label = LABELS.get(raw.strip().lower() if isinstance(raw, str) else raw)
    if raw is None or label is None:
        return Invalid("bad_label", "label", f"label {raw!r} is not good or bad",
                       "give each reply a label: true/false (also read: 1/0, good/bad, up/down)")
    if "completion" not in record and isinstance(record.get("messages"), list):
        turns = _messages(record["messages"], "messages")
        if isinstance(turns, Invalid):
            return turns
        rated = _as_sft(turns, "messages")
        if isinstance(rated, Invalid):
            return rated
        return {"messages": turns[:-1], "completion": turns[-1]["content"], "label": label}
    messages = _prompt(record)
    if isinstance(messages, Invalid):
        return messages
    completion = _str_field(record, "completion")
    if isinstance(completion, Invalid):
        return completion
    return {"messages": messages, "completion": completion, "label": label}


def example_text(example: dict[str, Any]) -> str:
    """All the text of an example, for hashing, PII scanning and near-duplicate detection."""
    if "text" in example:
        return example["text"]
    parts = [m["content"] for m in example["messages"]]
    parts += [example[k] for k in ("chosen", "rejected", "completion") if k in example]
    return "\n".join(parts)


def prompt_text(example: dict[str, Any]) -> str:
    """The input side: examples sharing it must share a split (or the test set leaks)."""
    if "text" in example:
        return example["text"]
    return "\n".join(m["content"] for m in example["messages"] if m["role"] != "assistant")
