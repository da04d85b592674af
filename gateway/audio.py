"""An uploaded recording, checked before it is decoded and bounded while it is: the container by
its first bytes and FFmpeg's probe, the codec against the container's table, the declared
duration, then the decoded samples counted as they come (a file whose header lies about its
length, a decompression bomb, stops at the bound). What passes is 16 kHz mono float32, Whisper's
input, cut into windows the model reads at once, near silences.

FFmpeg's libraries come with PyAV's wheel: no system ffmpeg is needed.
"""

from __future__ import annotations

import io
import wave
from dataclasses import dataclass
from typing import IO

import av
import numpy as np

from gateway.protocol import GatewayError

SAMPLE_RATE = 16_000  # Whisper's
MAX_CHANNELS = 8


@dataclass(frozen=True)
class Container:
    """One accepted kind of file: how it starts, FFmpeg's name for it, the codecs it may carry."""

    name: str
    demuxer: str
    codecs: frozenset[str]


CONTAINERS = (
    Container("wav", "wav", frozenset({"pcm_s16le", "pcm_s24le", "pcm_s32le", "pcm_f32le",
                                       "pcm_f64le", "pcm_u8", "pcm_mulaw", "pcm_alaw"})),
    Container("flac", "flac", frozenset({"flac"})),
    Container("mp3", "mp3", frozenset({"mp3", "mp3float"})),
    Container("ogg", "ogg", frozenset({"opus", "vorbis", "flac"})),
    Container("webm", "matroska,webm", frozenset({"opus", "vorbis"})),
    Container("m4a", "mov,mp4,m4a,3gp,3g2,mj2", frozenset({"aac", "alac"})),
)
BY_NAME = {c.name: c for c in CONTAINERS}
ACCEPTED = ", ".join(BY_NAME)


def bad_audio(message: str, code: str, status: int = 400) -> GatewayError:
    return GatewayError(status, message, "invalid_request_error", code, "file")


def sniff(head: bytes) -> Container | None:
    """The container the first bytes announce (magic numbers), before FFmpeg sees the file."""
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return BY_NAME["wav"]
    if head[:4] == b"fLaC":
        return BY_NAME["flac"]
    if head[:3] == b"ID3" or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return BY_NAME["mp3"]
    if head[:4] == b"OggS":
        return BY_NAME["ogg"]
    if head[:4] == b"\x1aE\xdf\xa3":
        return BY_NAME["webm"]
    if head[4:8] == b"ftyp":
        return BY_NAME["m4a"]
    return None


@dataclass(frozen=True)
class Audio:
    samples: np.ndarray  # float32, mono, SAMPLE_RATE
    container: str
    codec: str

    @property
    def seconds(self) -> float:
        return len(self.samples) / SAMPLE_RATE


def declared_seconds(file: IO[bytes], label: str) -> tuple[Container, str, float | None]:
    """(container, codec, the duration the file declares) without decoding a sample."""
    file.seek(0)
    head = file.read(16)
    if not head:
        raise bad_audio(f"{label} is empty.", "empty_audio")
    container = sniff(head)
    if container is None:
        raise bad_audio(f"{label} is not an audio file this endpoint reads ({ACCEPTED}).",
                        "unsupported_audio_format")
    file.seek(0)
    try:
        with av.open(file, mode="r") as opened:  # FFmpeg's own probe must agree
            if opened.format.name != container.demuxer:
                raise bad_audio(f"{label} starts like {container.name} but is "
                                f"{opened.format.name}.", "unsupported_audio_format")
            streams = opened.streams.audio
            if not streams:
                raise bad_audio(f"{label} holds no audio stream.", "no_audio_stream")
            codec = streams[0].codec_context.name
            channels = streams[0].codec_context.channels
            duration = opened.duration / av.time_base if opened.duration else None
    except av.error.FFmpegError as exc:
        raise bad_audio(f"{label} is damaged or truncated: {exc.strerror or exc}.",
                        "invalid_audio") from exc
    if codec not in container.codecs:
        raise bad_audio(f"{label} is {container.name} with {codec} audio; {container.name} is "
                        f"read with {', '.join(sorted(container.codecs))}.", "unsupported_codec")
    if channels > MAX_CHANNELS:
        raise bad_audio(f"{label} has {channels} channels; at most {MAX_CHANNELS}.",
                        "too_many_channels")
    return container, codec, duration


def decode(file: IO[bytes], label: str, max_seconds: float) -> Audio:
    """The recording as Whisper reads it, or a 400 naming what is wrong; decoding stops as soon
    as the bound is passed, whatever the header said."""
    container, codec, declared = declared_seconds(file, label)
    if declared is not None and declared > max_seconds:
        raise too_long(label, declared, max_seconds)
    limit = int(max_seconds * SAMPLE_RATE)
    resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
    pieces: list[np.ndarray] = []
    count = 0
    file.seek(0)
    try:
        with av.open(file, format=container.demuxer.split(",")[0], mode="r") as opened:
            for frame in opened.decode(opened.streams.audio[0]):
                for out in resampler.resample(frame):
                    pieces.append(out.to_ndarray().reshape(-1))
                    count += pieces[-1].size
                if count > limit:
                    raise too_long(label, count / SAMPLE_RATE, max_seconds)
            for out in resampler.resample(None):
                pieces.append(out.to_ndarray().reshape(-1))
    except av.error.FFmpegError as exc:
        raise bad_audio(f"{label} is damaged or truncated: {exc.strerror or exc}.",
                        "invalid_audio") from exc
    samples = np.concatenate(pieces).astype(np.float32) if pieces else np.zeros(0, np.float32)
    audio = Audio(samples, container.name, codec)
    if audio.seconds > max_seconds:
        raise too_long(label, audio.seconds, max_seconds)
    if audio.seconds < 0.1:
        raise bad_audio(f"{label} decodes to {audio.seconds:.2f} s of audio; nothing to "
                        "transcribe.", "empty_audio")
    if declared is not None and audio.seconds < declared * 0.9 - 0.5:
        raise bad_audio(f"{label} declares {declared:.1f} s but holds {audio.seconds:.1f} s: "
                        "it is truncated.", "truncated_audio")
    if container.name == "wav":
        check_wav_length(file, label)
    if not np.isfinite(audio.samples).all():
        raise bad_audio(f"{label} decodes to non-finite samples.", "invalid_audio")
    return audio


def check_wav_length(file: IO[bytes], label: str) -> None:
    """A WAV's RIFF header says how long the file is; FFmpeg plays what is there, so a cut file
    would pass as a shorter recording."""
    file.seek(0)
    head = file.read(8)
    file.seek(0, io.SEEK_END)
    size = file.tell()
    declared = int.from_bytes(head[4:8], "little") + 8
    if declared != 0xFFFFFFFF + 8 and size < declared:  # streaming writers leave it at max
        raise bad_audio(f"{label} declares {declared} bytes but has {size}: it is truncated.",
                        "truncated_audio")


def too_long(label: str, seconds: float, max_seconds: float) -> GatewayError:
    return bad_audio(f"{label} is {seconds:.0f} s of audio or more; at most {max_seconds:.0f} s "
                     "per request.", "audio_too_long", 413)


def windows(samples: np.ndarray, window_s: float, search_s: float = 5.0
            ) -> list[tuple[float, np.ndarray]]:
    """(start second, samples) of pieces no longer than the model's window, each cut at the
    quietest 0.1 s of the last `search_s` seconds before the window's end, so words are rarely
    split."""
    size, frame = int(window_s * SAMPLE_RATE), SAMPLE_RATE // 10
    out, start = [], 0
    while len(samples) - start > size:
        lo = start + max(size - int(search_s * SAMPLE_RATE), frame)
        tail = samples[lo:start + size]
        frames = tail[:len(tail) // frame * frame].reshape(-1, frame)
        cut = lo + int(np.argmin((frames ** 2).sum(axis=1))) * frame + frame // 2
        out.append((start / SAMPLE_RATE, samples[start:cut]))
        start = cut
    out.append((start / SAMPLE_RATE, samples[start:]))
    return out


def wav_bytes(samples: np.ndarray) -> bytes:
    """16-bit PCM WAV at Whisper's rate: what the engine is sent, whatever came in."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return buffer.getvalue()
