"""A corpus as its asset publishes it: `documents.jsonl` lists one {doc_id, file, sha256, chars}
per document and each `file` holds that document's text. The corpus asset writes it; the index,
datasets built from a corpus and `factory forget` read it here."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

LISTING = "documents.jsonl"


def is_forgotten(doc_id: str, text_sha256: str, forgotten: frozenset[str]) -> bool:
    """The erasure ledger's rule for a document (`Ledger.document_hashes`): the sha256 of its
    text or of its id is listed. The corpus asset and datasets read from a corpus both apply it."""
    return text_sha256 in forgotten or hashlib.sha256(doc_id.encode()).hexdigest() in forgotten


def listing(root: Path) -> list[dict[str, Any]]:
    """The documents of the corpus version stored in `root`."""
    return [json.loads(line) for line in (root / LISTING).read_text().splitlines()]


def documents(root: Path) -> Iterator[tuple[dict[str, Any], str]]:
    """Each document's listing entry and its text."""
    for entry in listing(root):
        yield entry, (root / entry["file"]).read_text()
