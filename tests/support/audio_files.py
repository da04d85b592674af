"""Recordings for the speech tests: a signal in each container the gateway reads, and hostile
files built from them (truncated, mislabelled, a bomb whose few bytes decode to hours)."""

from __future__ import annotations

import io

import av
import numpy as np

from gateway.audio import SAMPLE_RATE as RATE
from gateway.audio import wav_bytes as wav

__all__ = ["wav"]


# container name: (FFmpeg muxer, encoder, sample rate)
ENCODINGS = {"flac": ("flac", "flac", RATE), "mp3": ("mp3", "libmp3lame", RATE),
             "ogg": ("ogg", "libopus", 48_000), "webm": ("webm", "libopus", 48_000),
             "m4a": ("ipod", "aac", RATE)}


def signal(seconds: float, seed: int = 0) -> np.ndarray:
    """Speech-like: a tone whose pitch and loudness wander, with pauses every 2 s."""
    t = np.arange(int(seconds * RATE)) / RATE
    rng = np.random.default_rng(seed)
    envelope = (np.sin(2 * np.pi * 0.5 * t) > -0.3) * (0.3 + 0.2 * rng.random(t.size))
    return (envelope * np.sin(2 * np.pi * (180 + 40 * np.sin(t)) * t)).astype(np.float32)


def encoded(samples: np.ndarray, container: str) -> bytes:
    """`samples` in one of ENCODINGS' containers, written with FFmpeg (PyAV)."""
    muxer, encoder, rate = ENCODINGS[container]
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=muxer) as out:
        stream = out.add_stream(encoder, rate=rate)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray((samples[None, :] * 32767).astype(np.int16),
                                           format="s16", layout="mono")
        frame.sample_rate = RATE
        for piece in (frame, None):
            for packet in stream.encode(piece):
                out.mux(packet)
    return buffer.getvalue()


def silent_flac_bomb(minutes: float) -> bytes:
    """Digital silence: FLAC keeps a minute of it in a few kilobytes."""
    return encoded(np.zeros(int(minutes * 60 * RATE), np.float32), "flac")
