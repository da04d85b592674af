"""POST /v1/audio/transcriptions: OpenAI's speech-to-text, with the chat routes' tenancy.

The multipart body is counted while it streams (over the bound: 413, nothing kept); the model is
checked like a chat's (not granted: the same 404 as missing; a chat model: 400); the recording
is checked and decoded with bounds (gateway/audio.py) and charged in audio seconds against the
project's daily quota before any engine work. Each window of at most 30 s goes to a replica as
16 kHz WAV, asking for segments (vLLM's verbose_json), so every response format, SubRip and
WebVTT included (vLLM writes neither), is rendered here from the same timestamps.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from config.gateway import GatewaySettings
from gateway import audio
from gateway.access import Access
from gateway.accounting import Outcome
from gateway.audit import AuditWriter
from gateway.protocol import GatewayError
from gateway.tenancy import Principal, Tenancy
from gateway.upstream import ReplicaPool

FORM_OVERHEAD = 64 * 1024  # the form's other fields and part headers, beside the file
PATH = "/v1/audio/transcriptions"
Format = Literal["json", "text", "verbose_json", "srt", "vtt"]


class TranscriptionForm(BaseModel):
    """The form's fields besides `file` (others OpenAI defines are accepted and ignored)."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(max_length=256)
    language: str | None = Field(None, pattern=r"^[a-z]{2,3}$")
    prompt: str | None = Field(None, max_length=1000)
    response_format: Format = "json"
    temperature: float = Field(0.0, ge=0, le=1)


@dataclass(frozen=True)
class Segment:
    start: float
    end: float
    text: str


def invalid(message: str, param: str | None = None, code: str = "invalid_request") -> GatewayError:
    return GatewayError(400, message, "invalid_request_error", code, param)


async def bounded(stream: AsyncIterator[bytes], limit: int) -> AsyncIterator[bytes]:
    """The body as it arrives, stopped with a 413 once past `limit` bytes."""
    received = 0
    async for chunk in stream:
        received += len(chunk)
        if received > limit:
            raise GatewayError(413, f"The upload is larger than {limit - FORM_OVERHEAD} bytes.",
                               "invalid_request_error", "file_too_large", "file")
        yield chunk


async def read_form(request: Request, max_upload_bytes: int
                    ) -> tuple[TranscriptionForm, UploadFile]:
    kind = request.headers.get("content-type", "")
    if not kind.startswith("multipart/form-data"):
        raise invalid("Send the recording as multipart/form-data with a `file` field.", "file")
    parser = MultiPartParser(request.headers, bounded(request.stream(),
                                                      max_upload_bytes + FORM_OVERHEAD),
                             max_files=1, max_fields=16, max_part_size=4096)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise invalid(f"The form cannot be read: {exc.message}.") from exc
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise invalid("The form has no `file` (the recording).", "file")
    fields = {k: v for k, v in form.multi_items() if isinstance(v, str)}
    try:
        return TranscriptionForm.model_validate(fields), upload
    except ValidationError as exc:
        first = exc.errors()[0]
        param = str(first["loc"][0]) if first["loc"] else None
        raise invalid(f"{param}: {first['msg']}", param) from None


class Transcriber:
    def __init__(self, settings: GatewaySettings, access: Access, tenancy: Tenancy,
                 pool: ReplicaPool, audit: AuditWriter) -> None:
        self.settings, self.access, self.tenancy, self.pool = settings, access, tenancy, pool
        self.audit, self.speech = audit, settings.speech
        # seconds of recordings being transcribed now, per project: charged before their audit
        # row exists, so concurrent uploads cannot each pass the quota alone
        self.in_flight: dict[int, float] = defaultdict(float)

    async def transcribe(self, request: Request, principal: Principal, outcome: Outcome
                         ) -> Response:
        form, upload = await read_form(request, self.speech.max_upload_bytes)
        try:
            outcome.model = form.model
            self.access.require_inference(principal)
            await self.access.authorise_model(principal, form.model)
            if form.model not in self.speech.models:
                raise invalid(f"'{form.model}' is not a speech model; it answers chats.",
                              "model", "not_a_speech_model")
            label = f"file '{(upload.filename or 'upload')[:64]}'"
            _, _, declared = await asyncio.to_thread(audio.declared_seconds, upload.file, label)
            self.charge(principal, declared or 0.0)
            recording = await asyncio.to_thread(audio.decode, upload.file, label,
                                                self.speech.max_audio_seconds)
        finally:
            await upload.close()
        self.charge(principal, recording.seconds)
        self.in_flight[principal.project_id] += recording.seconds
        try:
            pieces = audio.windows(recording.samples, self.speech.window_seconds)
            answers = await asyncio.gather(*(self.window(form, start, samples, outcome)
                                             for start, samples in pieces))
        finally:
            self.in_flight[principal.project_id] -= recording.seconds
        outcome.audio_seconds = recording.seconds  # charged only for what was transcribed
        segments = [s for answer in answers for s in answer[0]]
        language = answers[0][1] or form.language
        return render(form.response_format, segments, recording.seconds, language)

    def charge(self, principal: Principal, seconds: float) -> None:
        """Refuse before decoding or engine work when the project's day is spent."""
        quota = principal.quota.audio_seconds_per_day
        used = self.audit.counted_audio_seconds(
            principal.project_id, time.strftime("%Y-%m-%d", time.gmtime()),
            self.tenancy.audio_seconds) + self.in_flight[principal.project_id]
        if used + seconds > quota:
            raise GatewayError(429, f"Project '{principal.project}' has transcribed "
                                    f"{used:.0f} s of its {quota} s of audio today; this file "
                                    f"needs {seconds:.0f} s.", "rate_limit_error",
                               "audio_quota_exceeded")

    async def window(self, form: TranscriptionForm, start: float, samples: Any,
                     outcome: Outcome) -> tuple[list[Segment], str | None]:
        data = {"model": form.model, "response_format": "verbose_json",
                "temperature": str(form.temperature),
                **({"language": form.language} if form.language else {}),
                **({"prompt": form.prompt} if form.prompt else {})}
        response, outcome.replica = await self.pool.post_form(
            form.model, PATH, data, {"file": ("audio.wav", audio.wav_bytes(samples),
                                              "audio/wav")})
        if response.status_code != 200:
            raise engine_refused(response, form.model)
        body = response.json()
        segments = [Segment(start + s["start"], start + s["end"], s["text"].strip())
                    for s in body.get("segments") or [] if s["text"].strip()]
        if not segments and body.get("text", "").strip():  # an engine that writes no segments
            end = start + len(samples) / audio.SAMPLE_RATE
            segments = [Segment(start, end, body["text"].strip())]
        return segments, body.get("language")


def engine_refused(response: Any, model: str) -> GatewayError:
    """The engine's own 4xx (a language the model lacks) relayed as the client's error; any
    other answer is the replica's fault, not the client's."""
    if 400 <= response.status_code < 500:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text[:300]
        return GatewayError(400, f"'{model}' refused the recording: {message}",
                            "invalid_request_error", "transcription_refused")
    return GatewayError(502, f"The replica serving '{model}' failed on this recording.",
                        "server_error", "upstream_error")


def timestamp(seconds: float, separator: str) -> str:
    millis = round(seconds * 1000)
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    return f"{hours:02d}:{minutes:02d}:{rest // 1000:02d}{separator}{rest % 1000:03d}"


def render(fmt: Format, segments: list[Segment], duration: float, language: str | None
           ) -> Response:
    text = " ".join(s.text for s in segments if s.text)
    if fmt == "json":
        return JSONResponse({"text": text, "usage": {"type": "duration",
                                                     "seconds": round(duration, 3)}})
    if fmt == "text":
        return PlainTextResponse(text + "\n")
    if fmt == "verbose_json":
        return JSONResponse({"task": "transcribe", "language": language,
                             "duration": round(duration, 3), "text": text, "segments": [
                                 {"id": i, "start": round(s.start, 3), "end": round(s.end, 3),
                                  "text": s.text} for i, s in enumerate(segments)]})
    cues = [s for s in segments if s.text]
    if fmt == "srt":
        return PlainTextResponse("\n".join(
            f"{i}\n{timestamp(s.start, ',')} --> {timestamp(s.end, ',')}\n{s.text}\n"
            for i, s in enumerate(cues, 1)), media_type="application/x-subrip")
    return PlainTextResponse("WEBVTT\n\n" + "\n".join(
        f"{timestamp(s.start, '.')} --> {timestamp(s.end, '.')}\n{s.text}\n" for s in cues),
        media_type="text/vtt")
