"""The control plane's calls to a speech deployment: a recording sent to the engine's
/v1/audio/transcriptions (vLLM decodes the container and cuts audio longer than Whisper's 30 s
window itself), answered with timestamped segments."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx

# the recordings a corpus transcribes and a word-error-rate set reads (containers vLLM decodes)
AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".webm", ".m4a")
TIMESTAMP = re.compile(r"^\[\d{2}:\d{2}:\d{2}\] ", re.MULTILINE)


class TranscriptionFailed(RuntimeError):
    """The engine refused or failed a recording; the message names the file and its answer."""


def transcribe(url: str, model: str, path: Path, *, language: str | None = None,
               api_key: str | None = None, timeout_s: float = 600) -> dict[str, Any]:
    """vLLM's verbose_json for one file: text, language, duration and segments."""
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    data = {"model": model, "response_format": "verbose_json", "temperature": "0",
            **({"language": language} if language else {})}
    with path.open("rb") as f:
        try:
            response = httpx.post(f"{url}/v1/audio/transcriptions", headers=headers, data=data,
                                  files={"file": (path.name, f)}, timeout=timeout_s)
        except httpx.HTTPError as exc:
            raise TranscriptionFailed(f"{path}: the speech server {url} did not answer "
                                      f"({exc})") from exc
    if response.status_code != 200:
        raise TranscriptionFailed(f"{path}: {url} answered {response.status_code}: "
                                  f"{response.text[:300]}")
    return response.json()


def timestamped(result: dict[str, Any]) -> str:
    """A transcript as a document: one `[hh:mm:ss] text` line per segment, so a passage
    retrieved from it says where in the recording it was said."""
    lines = []
    for segment in result.get("segments") or [{"start": 0, "text": result.get("text", "")}]:
        text = segment["text"].strip()
        if text:
            start = int(segment["start"])
            lines.append(f"[{start // 3600:02d}:{start % 3600 // 60:02d}:{start % 60:02d}] {text}")
    return "\n".join(lines)


def spoken_text(document: str) -> str:
    """What a `timestamped` transcript says, without its timestamps: training text."""
    return " ".join(TIMESTAMP.sub("", document).split())
