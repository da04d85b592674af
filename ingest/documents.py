"""Raw documents (PDF, DOCX, HTML, Markdown, TXT) to clean text, for pre-training and RAG.

A document that cannot be parsed is a Rejection naming the file; the others still go through.
"""

from __future__ import annotations

import re
from pathlib import Path

from ingest.problems import Rejection

DOCUMENTS = {".pdf", ".docx", ".html", ".htm", ".md", ".markdown", ".txt"}


def _pdf(path: Path) -> str:
    from pypdf import PdfReader

    reader = PdfReader(path, strict=False)
    return "\n\n".join(page.extract_text() or "" for page in reader.pages)


def _docx(path: Path) -> str:
    import docx

    document = docx.Document(str(path))
    return "\n\n".join(p.text for p in document.paragraphs if p.text.strip())


def _html(path: Path) -> str:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(path.read_bytes(), "html.parser")
    for tag in soup(["script", "style", "nav", "header", "footer", "noscript"]):
        tag.decompose()
    return soup.get_text("\n")


def _plain(path: Path) -> str:
    return path.read_bytes().decode("utf-8")


EXTRACTORS = {".pdf": _pdf, ".docx": _docx, ".html": _html, ".htm": _html, ".md": _plain,
              ".markdown": _plain, ".txt": _plain}


def clean(text: str) -> str:
    """Normalise whitespace but keep paragraph breaks (chunkers split on them)."""
    text = text.replace("\r\n", "\n").replace("\x00", "")
    text = re.sub(r"[ \t\f\v]+", " ", text)
    text = re.sub(r"\n\s*\n\s*", "\n\n", text)
    return text.strip()


def extract_text(path: Path, name: str) -> str | Rejection:
    extractor = EXTRACTORS.get(path.suffix.lower())
    if extractor is None:
        return Rejection(name, 1, "unsupported_document", None,
                         f"no text extractor for {path.suffix!r}",
                         f"convert it to one of {', '.join(sorted(EXTRACTORS))}")
    try:
        text = clean(extractor(path))
    except UnicodeDecodeError as exc:
        return Rejection(name, 1, "invalid_utf8", None, f"byte {exc.start} is not UTF-8",
                         "re-save the document as UTF-8")
    except Exception as exc:  # each parser raises its own types; report, never swallow
        return Rejection(name, 1, "unreadable_document", None,
                         f"{type(exc).__name__}: {exc}"[:300],
                         "the file is corrupt or mislabelled; export it again")
    if not text:
        return Rejection(name, 1, "empty_document", None, "no text could be extracted",
                         "scanned PDFs need OCR first; otherwise check the file")
    return text
