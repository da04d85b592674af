"""/v1/audio/transcriptions against a hostile tenant, before a fake engine (httpx.MockTransport):
what reaches the engine (16 kHz WAV windows asking for segments), what never does (every bad
upload is a 4xx in OpenAI's format), tenancy like chat's, and audio seconds in usage, audit and
the daily quota. The real Whisper behind vLLM is tests/speech/test_speech.py."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import openai
import pytest
from sqlalchemy import select

from config.gateway import GatewaySettings, ProjectQuota, SpeechSettings
from gateway.app import build_gateway
from gateway.db import AuditRecord
from gateway.serving import Gateway
from gateway.upstream import ReplicaPool
from tests.support.audio_files import encoded, signal, silent_flac_bomb, wav
from tests.support.fake_vllm import FakeVLLM
from tests.support.live_server import serve

PATH = "/v1/audio/transcriptions"
MAX_SECONDS = 120


@dataclass
class Speech:
    url: str
    gateway: Gateway
    fake: FakeVLLM

    def tenant(self, role: str = "owner", grants: tuple[str, ...] = ("whisper", "chatty"),
               audio_quota: int | None = None) -> tuple[str, str]:
        project = f"p-{uuid.uuid4().hex[:8]}"
        t = self.gateway.tenancy
        quota = ProjectQuota(audio_seconds_per_day=audio_quota) if audio_quota else None
        t.create_project(project, owner="alice", quota=quota)
        for model in grants:
            t.grant(project, model)
        if role != "owner":
            t.add_member(project, "bob", role)
        return project, t.create_key(project, "alice" if role == "owner" else "bob")["key"]

    def post(self, key: str, content: bytes, name: str = "talk.wav", **fields: str
             ) -> httpx.Response:
        form = {"model": "whisper", **fields}
        return httpx.post(f"{self.url}{PATH}", headers={"authorization": f"Bearer {key}"},
                          data=form, files={"file": (name, content)}, timeout=60)

    def transcriptions(self) -> list[dict]:
        return self.fake.sent(PATH)

    def audit(self, key: str) -> list[AuditRecord]:
        principal = self.gateway.tenancy.authenticate(key)
        assert principal is not None
        self.gateway.audit.drain()
        with self.gateway.sessions() as s:
            return list(s.scalars(select(AuditRecord).where(
                AuditRecord.project_id == principal.project_id).order_by(AuditRecord.id)))


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Speech]:
    tmp = tmp_path_factory.mktemp("speech")
    settings = GatewaySettings(
        database_url=f"sqlite:///{tmp / 'gateway.db'}", upstreams=["http://replica:8000"],
        refresh_seconds=3600, audit_dead_letter=str(tmp / "dead.jsonl"),
        speech=SpeechSettings(models=["whisper"], max_upload_bytes=2_000_000,
                              max_audio_seconds=MAX_SECONDS))
    fake = FakeVLLM(models=("chatty", "whisper"), base="chatty")
    gateway = build_gateway(settings, ReplicaPool(settings.upstreams, 3600,
                                                  transport=fake.transport()))
    for url, running in serve(settings, gateway):
        yield Speech(url, running, fake)


@pytest.fixture(autouse=True)
def nothing_sent_yet(speech: Speech) -> None:
    speech.fake.requests.clear()


def assert_error(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert (error["code"], error["type"]) == (code, "invalid_request_error" if status < 429
                                              else error["type"]), error
    assert error["message"]


def test_the_openai_sdk_transcribes_every_container_through_the_engine(speech: Speech) -> None:
    _, key = speech.tenant()
    client = openai.OpenAI(base_url=f"{speech.url}/v1", api_key=key)
    for container in ("wav", "flac", "mp3", "ogg", "webm", "m4a"):
        content = wav(signal(3)) if container == "wav" else encoded(signal(3), container)
        result = client.audio.transcriptions.create(model="whisper",
                                                    file=(f"a.{container}", content))
        assert result.text == "window 1", container
        (sent,) = speech.transcriptions()
        speech.fake.requests.clear()
        # the engine gets 16 kHz mono 16-bit WAV asking for segments, whatever came in
        assert (sent["content-type"], sent["model"], sent["response_format"]) == (
            "multipart/form-data", "whisper", "verbose_json")
        assert sent["file"][:4] == b"RIFF" and abs(sent["file_bytes"] - 44 - 3 * 32_000) < 4_000


def test_long_audio_is_cut_into_windows_and_timestamps_run_on(speech: Speech) -> None:
    _, key = speech.tenant()
    r = speech.post(key, encoded(signal(70), "flac"), "talk.flac", response_format="srt")
    assert r.status_code == 200, r.text
    windows = speech.transcriptions()
    assert len(windows) == 3  # 70 s in pieces of at most 30 s
    assert all(w["file_bytes"] <= 44 + 30 * 32_000 for w in windows)
    cues = [block.splitlines() for block in r.text.strip().split("\n\n")]
    assert [c[0] for c in cues] == ["1", "2", "3"]
    starts = [c[1].split(" --> ")[0] for c in cues]
    assert starts[0] == "00:00:00,000" and starts == sorted(starts)
    assert cues[2][1].split(" --> ")[1] >= "00:01:09,900"  # the last ends at the audio's end
    vtt = speech.post(key, wav(signal(4)), response_format="vtt")
    assert vtt.text.startswith("WEBVTT\n\n00:00:00.000 --> 00:00:04.0")
    verbose = speech.post(key, wav(signal(4)), response_format="verbose_json").json()
    assert verbose["duration"] == pytest.approx(4, abs=0.01)
    assert verbose["segments"][0]["end"] == pytest.approx(4, abs=0.05)
    assert speech.post(key, wav(signal(4)), response_format="text").text.endswith("\n")


def test_hostile_uploads_are_4xx_before_the_engine_and_leave_no_file(speech: Speech) -> None:
    _, key = speech.tenant()
    good = wav(signal(3))
    m4a = encoded(signal(3), "m4a")
    before = set(os.listdir(tempfile.gettempdir()))
    cases = [
        (b"", "empty.wav", 400, "empty_audio"),
        (b"PK\x03\x04" + b"\0" * 2000, "archive.wav", 400, "unsupported_audio_format"),
        (b"%PDF-1.7\n" + b"\0" * 2000, "doc.mp3", 400, "unsupported_audio_format"),
        (good[:len(good) // 2], "cut.wav", 400, "truncated_audio"),
        (good[:40], "header.wav", 400, "invalid_audio"),
        (m4a[:len(m4a) // 3], "cut.m4a", 400, "invalid_audio"),
        (b"RIFF\x24\0\0\0WAVEfmt " + os.urandom(3000), "noise.wav", 400, "invalid_audio"),
        (os.urandom(2_100_000), "big.wav", 413, "file_too_large"),
        (encoded(signal(MAX_SECONDS + 10), "mp3"), "long.mp3", 413, "audio_too_long"),
        (silent_flac_bomb(minutes=60), "bomb.flac", 413, "audio_too_long"),
    ]
    for content, name, status, code in cases:
        assert_error(speech.post(key, content, name), status, code)
    assert speech.transcriptions() == []
    assert set(os.listdir(tempfile.gettempdir())) <= before
    r = httpx.post(f"{speech.url}{PATH}", headers={"authorization": f"Bearer {key}"},
                   json={"model": "whisper", "file": "aGVsbG8="})
    assert_error(r, 400, "invalid_request")
    for fields, param in (({"response_format": "docx"}, "response_format"),
                          ({"temperature": "9"}, "temperature"),
                          ({"language": "english!"}, "language")):
        r = speech.post(key, good, **fields)
        assert_error(r, 400, "invalid_request")
        assert r.json()["error"]["param"] == param
    assert speech.transcriptions() == []


def test_tenancy_is_chats(speech: Speech) -> None:
    _, theirs = speech.tenant(grants=("chatty",))
    missing = speech.post(theirs, wav(signal(2)), model="no-such-model")
    not_granted = speech.post(theirs, wav(signal(2)))
    assert_error(not_granted, 404, "model_not_found")
    assert not_granted.json()["error"]["message"] == missing.json()[
        "error"]["message"].replace("no-such-model", "whisper")
    _, viewer = speech.tenant(role="viewer")
    assert speech.post(viewer, wav(signal(2))).status_code == 403
    _, ours = speech.tenant()
    assert_error(speech.post(ours, wav(signal(2)), model="chatty"), 400, "not_a_speech_model")
    chat = httpx.post(f"{speech.url}/v1/chat/completions",
                      headers={"authorization": f"Bearer {ours}"}, timeout=30,
                      json={"model": "whisper", "messages": [{"role": "user", "content": "hi"}]})
    assert_error(chat, 400, "not_a_generative_model")
    assert speech.transcriptions() == []
    models = httpx.get(f"{speech.url}/v1/models",
                       headers={"authorization": f"Bearer {ours}"}).json()["data"]
    assert {m["id"]: m["type"] for m in models}["whisper"] == "speech"


def test_audio_seconds_are_counted_audited_and_held_to_the_daily_quota(speech: Speech) -> None:
    _, key = speech.tenant(audio_quota=10)
    assert speech.post(key, wav(signal(4))).status_code == 200
    assert speech.post(key, encoded(signal(4), "flac")).status_code == 200
    refused = speech.post(key, wav(signal(4)))
    assert_error(refused, 429, "audio_quota_exceeded")
    assert "8 s of its 10 s" in refused.json()["error"]["message"]
    assert len(speech.transcriptions()) == 2  # refused before the engine
    speech.gateway.audit.drain()
    usage = httpx.get(f"{speech.url}/v1/usage",
                      headers={"authorization": f"Bearer {key}"}).json()["data"]
    assert sum(u["audio_seconds"] for u in usage) == pytest.approx(8, abs=0.05)
    rows = [r for r in speech.audit(key) if r.route != "usage"]
    assert [(r.route, r.model, r.status) for r in rows] == [
        ("audio.transcriptions", "whisper", 200)] * 2 + [
        ("audio.transcriptions", "whisper", 429)]
    assert [round(r.audio_seconds) for r in rows] == [4, 4, 0]


def test_a_hostile_file_name_stays_out_of_the_engine_and_is_cut_in_errors(
        speech: Speech) -> None:
    """The caller's file name is a label: the engine is sent `audio.wav` whatever it was, and
    an error quotes at most its first 64 characters."""
    _, key = speech.tenant()
    name = "../../../../etc/<script>alert(1)</script>" + "x" * 500 + ".wav"
    assert speech.post(key, wav(signal(2)), name=name).status_code == 200
    assert [s["filename"] for s in speech.transcriptions()] == ["audio.wav"]
    refused = speech.post(key, b"these bytes are not a recording", name=name)
    assert_error(refused, 400, "unsupported_audio_format")
    message = refused.json()["error"]["message"]
    assert f"'{name[:64]}'" in message and name[:65] not in message
