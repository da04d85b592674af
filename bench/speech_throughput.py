"""Speech: the real-time factor (audio seconds transcribed per wall second) of the same
recordings through our gateway, straight to vLLM, with faster-whisper on the CTranslate2 files
the model was converted from, and with transformers' pipeline on the converted folder, side by
side in one run; and each one's word error rate on the same references.

    make demo                               # once: the whisper base model is materialized
    infra/setup-envs.sh bench-speech        # once: faster-whisper in its own environment
    .venvs/factory/bin/python -m bench.speech_throughput [--config factory.yaml --rounds 3]

The recordings are the speech deployment's held-out set: sentences of the demo corpus spoken by
espeak-ng in the voices and speeds its `transcription_eval` names, plus the recordings in its
folder (each beside a .txt). One request at a time, greedy decoding, English, float32 everywhere
(faster-whisper's int8, its CPU default, is a fifth row). Each engine warms up on one file; then
the engines take turns in rounds and the medians are printed. The vLLM server is the only
engine process alive between its own turns, and it idles then.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from assets.speech_evaluation import (
    Recording,
    sentences,
    synthesised,
    users_recordings,
    word_error_rate,
)
from bench.serving_throughput import gateway_process
from config.loading import load_config
from config.schema import FactoryConfig
from gateway.audio import decode
from models.sources import source_path
from pipelines.graph import resources_for
from resources.vllm_replica import LoraStore

REPO = Path(__file__).resolve().parents[1]
FASTER_WHISPER = REPO / ".venvs" / "bench-speech" / "bin" / "python"
FASTER_WHISPER_RUNNER = Path(__file__).with_name("faster_whisper_runner.py")
Transcribe = Callable[[Path], str]  # a recording's path -> its text


@dataclass
class Turn:
    wall_s: float
    texts: list[str]


def audio_seconds(recordings: list[Recording]) -> float:
    total = 0.0
    for r in recordings:
        with r.path.open("rb") as f:
            total += decode(f, r.path.name, max_seconds=3600).seconds
    return total


def multipart(url: str, headers: dict[str, str], model: str) -> Transcribe:
    """An OpenAI-style /v1/audio/transcriptions endpoint (ours or vLLM's)."""
    client = httpx.Client(base_url=url, headers=headers, timeout=600)

    def run(path: Path) -> str:
        response = client.post("/v1/audio/transcriptions", data={
            "model": model, "language": "en", "response_format": "json", "temperature": "0"},
            files={"file": (path.name, path.read_bytes())})
        response.raise_for_status()
        return response.json()["text"]
    return run


class FasterWhisper:
    """faster-whisper in its own environment (bench/faster_whisper_runner.py), one process kept
    alive across rounds so that only transcription is timed."""

    def __init__(self, ct2_dir: Path, compute_type: str) -> None:
        if not FASTER_WHISPER.is_file():
            raise SystemExit(f"{FASTER_WHISPER} is missing: run "
                             "`infra/setup-envs.sh bench-speech` first")
        self.process = subprocess.Popen(
            [str(FASTER_WHISPER), str(FASTER_WHISPER_RUNNER), str(ct2_dir), compute_type],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def __call__(self, path: Path) -> str:
        assert self.process.stdin and self.process.stdout
        self.process.stdin.write(f"{path}\n")
        self.process.stdin.flush()
        answer = json.loads(self.process.stdout.readline())
        if "error" in answer:
            raise RuntimeError(f"faster-whisper on {path.name}: {answer['error']}")
        return answer["text"]

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def transformers_pipeline(hf_dir: Path) -> Transcribe:
    """transformers' ASR pipeline on the converted folder vLLM serves, long files in its 30 s
    chunks."""
    import torch
    from transformers import pipeline

    torch.set_num_threads(2)
    asr = pipeline("automatic-speech-recognition", model=str(hf_dir), device="cpu",
                   torch_dtype=torch.float32, chunk_length_s=30)

    def run(path: Path) -> str:
        with path.open("rb") as f:
            samples = decode(f, path.name, max_seconds=3600).samples
        return asr({"raw": samples, "sampling_rate": 16_000}, generate_kwargs={
            "language": "en", "task": "transcribe", "num_beams": 1})["text"]
    return run


def timed(engine: Transcribe, recordings: list[Recording]) -> Turn:
    started = time.perf_counter()
    texts = [engine(r.path) for r in recordings]
    return Turn(time.perf_counter() - started, texts)


def held_out_set(config: FactoryConfig, deployment: str, folder: Path) -> list[Recording]:
    spec = config.deployments[deployment].transcription_eval
    if spec is None:
        raise SystemExit(f"deployments.{deployment} has no transcription_eval to take "
                         "recordings from")
    return synthesised(sentences(config, spec), spec, folder) + users_recordings(config, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="factory.yaml")
    parser.add_argument("--deployment", default="speech")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--port", type=int, default=8040)
    args = parser.parse_args()
    config = load_config(args.config)
    res = resources_for(config)
    store, vllm = res["store"], res["vllm"]
    spec = config.deployments[args.deployment]
    base = store.read_ref(f"base_model/{spec.base_model}")
    if base is None:
        raise SystemExit(f"base_model/{spec.base_model} is not materialized: run `make demo`")
    hf_dir = store.local_dir(base["prefix"])
    ct2_dir = source_path(config.base_models[spec.base_model].location, config.root,
                          "model.bin", joined_in=Path(tempfile.mkdtemp(prefix="bench-")) / "ct2")
    log = type("Log", (), {"info": staticmethod(print)})()
    with tempfile.TemporaryDirectory() as tmp:
        recordings = held_out_set(config, args.deployment, Path(tmp))
        seconds = audio_seconds(recordings)
        print(f"{len(recordings)} recordings, {seconds:.1f} s of audio; "
              f"starting vLLM on :{args.port} ...")
        state, _ = vllm.ensure(
            "bench-speech", base_name=spec.base_model, base_dir=hf_dir,
            base_version=base["version"], adapters=[], lora_store=LoraStore(store.absolute_url),
            host="127.0.0.1", port=args.port, max_model_len=spec.max_model_len, max_loras=0,
            kv_cache_gib=spec.kv_cache_gib, extra_args=spec.extra_args, startup_timeout_s=300,
            log=log)
        faster = {kind: FasterWhisper(ct2_dir, kind) for kind in ("float32", "int8")}
        try:
            with gateway_process(state.url, [spec.base_model], port=args.port + 1,
                                 speech_models=[spec.base_model]) as (url, headers, _):
                engines: dict[str, Transcribe] = {
                    "gateway -> vLLM": multipart(url, headers, spec.base_model),
                    "vLLM directly": multipart(state.url, {}, spec.base_model),
                    "faster-whisper float32": faster["float32"],
                    "faster-whisper int8": faster["int8"],
                    "transformers pipeline": transformers_pipeline(hf_dir),
                }
                for engine in engines.values():
                    engine(recordings[0].path)  # warm-up
                rounds = [{name: timed(engine, recordings) for name, engine in engines.items()}
                          for _ in range(args.rounds)]
        finally:
            for process in faster.values():
                process.close()
            vllm.stop("bench-speech", log)
        report(rounds, recordings, seconds)


def report(rounds: list[dict[str, Turn]], recordings: list[Recording], seconds: float) -> None:
    referenced = [i for i, r in enumerate(recordings) if r.reference]
    references = [recordings[i].reference for i in referenced]
    print(f"\n| engine | real-time factor (median of {len(rounds)}) | wall s | WER | "
          "vs vLLM directly |")
    print("|---|---|---|---|---|")
    direct = statistics.median(r["vLLM directly"].wall_s for r in rounds)
    for name in rounds[0]:
        wall = statistics.median(r[name].wall_s for r in rounds)
        wer = word_error_rate(references, [rounds[-1][name].texts[i] for i in referenced])
        print(f"| {name} | {seconds / wall:.2f}x | {wall:.1f} | {wer:.3f} | "
              f"{direct / wall:.2f} |")


if __name__ == "__main__":
    sys.exit(main())
