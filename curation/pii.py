"""PII scrubbing: e-mail addresses, phone numbers, US SSNs and payment card numbers.

Regexes find candidates; card numbers must also pass the Luhn check so order ids and other long
numbers survive. Each hit is replaced by a typed placeholder and counted per kind.
"""

from __future__ import annotations

import re
from collections import Counter

PATTERNS: dict[str, re.Pattern[str]] = {
    "email": re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b"),
    "card": re.compile(r"\b(?:\d[ -]?){12,18}\d\b"),
    "ssn": re.compile(r"\b(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}\b"),
    "phone": re.compile(
        r"(?<![\w-])(?<!\d[ .])(?:\+?\d{1,3}[ .-]?)?(?:\(\d{2,4}\)|\d{2,4})[ .-]\d{3,4}[ .-]\d{3,4}"
        r"(?![\w-])(?![ .]\d)"
    ),
}
ORDER = ("email", "card", "ssn", "phone")  # cards before phones: both are digit runs
# What every match contains: checking for it is ~100x cheaper than a regex scan.
REQUIRES = {"email": "@", "ssn": "-"}
MIN_DIGITS = {"email": 0, "card": 13, "ssn": 9, "phone": 8}


def luhn_ok(number: str) -> bool:
    digits = [int(c) for c in number if c.isdigit()]
    if not 13 <= len(digits) <= 19:
        return False
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def scrub(text: str, kinds: tuple[str, ...] = ORDER) -> tuple[str, Counter[str]]:
    counts: Counter[str] = Counter()
    return _scrub(text, kinds, counts), counts


def _scrub(text: str, kinds: tuple[str, ...], counts: Counter[str]) -> str:
    """`text` with each hit replaced by its placeholder, counted into `counts`."""
    digits = _digits(text)  # placeholders hold none: a bound for every pass
    for kind in ORDER:
        if (kind not in kinds or MIN_DIGITS[kind] > digits or REQUIRES.get(kind, "") not in text
                or PATTERNS[kind].search(text) is None):
            continue

        def replace(match: re.Match[str], kind: str = kind) -> str:
            if kind == "card" and not luhn_ok(match.group()):
                return match.group()
            counts[kind] += 1
            return f"[{kind.upper()}]"

        text = PATTERNS[kind].sub(replace, text)
    return text


def _digits(text: str) -> int:
    """How many decimal digits `text` holds; for non-ASCII text, where `\\d` also matches other
    scripts' digits, its length (a bound that skips nothing)."""
    return len(text) - len(text.encode().translate(None, b"0123456789")) if text.isascii() \
        else len(text)


TEXT_FIELDS = ("text", "chosen", "rejected", "completion")


def scrub_example(example: dict, kinds: tuple[str, ...] = ORDER) -> tuple[dict, Counter[str]]:
    """Scrub every text field of an internal-schema example."""
    total: Counter[str] = Counter()
    out = dict(example)
    if "messages" in out:
        turns = []
        for m in out["messages"]:
            content = _scrub(m["content"], kinds, total)
            turns.append(m if content is m["content"] else {**m, "content": content})
        out["messages"] = turns
    for key in TEXT_FIELDS:
        if key in out:
            out[key] = _scrub(out[key], kinds, total)
    return out, total
