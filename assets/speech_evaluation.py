"""Word error rate of a speech deployment, through its endpoint, on recordings it never saw:
sentences of a corpus spoken by espeak-ng (Debian's synthesiser) in the voices and speeds the
spec names, plus a folder of the user's own recordings with their transcripts. Both sides are
normalised the way Whisper's authors score English (numbers, spelling, punctuation) before
jiwer counts the errors, so "twelve percent" heard as "12%" is right. The blocking check holds
the rate under `max_wer`; the figures also go into the model's card (what the playground shows).
"""

import random
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import jiwer
from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

from assets.common import WITH_ITS_ASSET, Definition, current
from assets.deployments import published
from config.deployments import DeploymentSpec, TranscriptionEvalSpec
from config.schema import FactoryConfig
from ingest.demo_data import filings
from resources.object_store import ObjectStore
from resources.speech_client import AUDIO_SUFFIXES, transcribe
from store.keys import speech_card_key

normalise = EnglishTextNormalizer({})


@dataclass(frozen=True)
class Recording:
    path: Path
    reference: str
    condition: str  # "en-us @ 150 wpm", or "your recordings"


def sentences(config: FactoryConfig, spec: TranscriptionEvalSpec) -> list[str]:
    """`spec.sentences` sentences of the corpus, drawn with the spec's seed: spoken prose of
    the kind the deployment will hear, held out from nothing it was trained on."""
    if spec.corpus is not None:
        folder = config.work_dir / "runs" / "corpus" / spec.corpus / "docs"
        texts = [p.read_text() for p in sorted(folder.glob("*.txt"))]
        if not texts:
            raise dg.Failure(f"transcription_eval.corpus: corpus/{spec.corpus} has no documents "
                             "here; materialize it first")
    else:
        texts = [f.text for f in filings.generate(20, spec.seed)]
    pool = sorted({s.strip() for t in texts for s in re.split(r"(?<=[.!?])\s+", t)
                   if 6 <= len(s.split()) <= 30})
    if len(pool) < spec.sentences:
        raise dg.Failure(f"transcription_eval: {len(pool)} sentences of 6-30 words found, "
                         f"{spec.sentences} asked for")
    return random.Random(spec.seed).sample(pool, spec.sentences)


def synthesised(texts: list[str], spec: TranscriptionEvalSpec, folder: Path) -> list[Recording]:
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        raise dg.Failure("espeak-ng is not installed (apt-get install espeak-ng; `make setup` "
                         "installs it): the held-out recordings are spoken with it")
    out = []
    for voice in spec.voices:
        for speed in spec.speeds:
            for i, text in enumerate(texts):
                path = folder / f"{voice}-{speed}-{i:03d}.wav"
                done = subprocess.run([espeak, "-v", voice, "-s", str(speed), "-w", str(path),
                                       text], capture_output=True, text=True, check=False)
                if done.returncode != 0 or not path.is_file():
                    raise dg.Failure(f"espeak-ng -v {voice} -s {speed} failed: "
                                     f"{done.stderr.strip()[:300]} (voices: espeak-ng --voices)")
                out.append(Recording(path, text, f"{voice} @ {speed} wpm"))
    return out


def users_recordings(config: FactoryConfig, spec: TranscriptionEvalSpec) -> list[Recording]:
    if spec.recordings is None:
        return []
    folder = config.resolve(spec.recordings)
    out = []
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        if path.suffix.lower() in AUDIO_SUFFIXES:
            transcript = path.with_suffix(".txt")
            if not transcript.is_file():
                raise dg.Failure(f"{path}: no {transcript.name} beside it saying what is said")
            out.append(Recording(path, transcript.read_text().strip(), "your recordings"))
    return out


def word_error_rate(references: list[str], hypotheses: list[str]) -> float:
    pairs = [(normalise(r), normalise(h)) for r, h in zip(references, hypotheses, strict=True)]
    kept = [(r, h) for r, h in pairs if r.strip()]
    return jiwer.wer([r for r, _ in kept], [h for _, h in kept])


def card(model: str, source: str, license_: str | None, rows: list[dict[str, Any]],
         wer: float, deployment: str) -> str:
    table = "\n".join(f"| {r['condition']} | {r['recordings']} | {r['wer']:.3f} |" for r in rows)
    return (f"---\nlicense: {license_ or 'unknown'}\npipeline_tag: automatic-speech-recognition\n"
            f"---\n# {model}\n\nSpeech model from `{source}`, served by deployment "
            f"`{deployment}` on `/v1/audio/transcriptions`.\n\n## Word error rate\n\n"
            f"{wer:.3f} overall, through the endpoint, on held-out recordings "
            f"({time.strftime('%Y-%m-%d')}; Whisper's English normaliser, jiwer).\n\n"
            f"| condition | recordings | WER |\n|---|---|---|\n{table}\n")


def transcription_eval_asset(name: str, spec: DeploymentSpec, config: FactoryConfig
                             ) -> list[Definition]:
    if spec.transcription_eval is None:
        return []
    evaluation = spec.transcription_eval
    deps = [dg.AssetKey(["deployment", name])]
    if evaluation.corpus:
        deps.append(dg.AssetKey(["corpus", evaluation.corpus]))

    @dg.asset(key=["transcription_eval", name], group_name="serving", kinds={"vllm"},
              deps=deps, description=f"Word error rate of what deployment '{name}' serves, "
                                     "through its endpoint, on held-out spoken sentences.")
    def _evaluation(context: dg.AssetExecutionContext, store: ObjectStore
                    ) -> dg.MaterializeResult:
        started = time.monotonic()
        deployed = published(store, name)
        if deployed is None:
            raise dg.Failure(f"deployment {name} is not serving; materialize deployment/{name}")
        url, model = deployed["replicas"][0]["url"], deployed["base_model"]
        folder = config.work_dir / "runs" / "transcription_eval" / name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        recordings = synthesised(sentences(config, evaluation), evaluation, folder)
        recordings += users_recordings(config, evaluation)
        heard, audio_seconds = [], 0.0
        transcribing = time.monotonic()
        for i, recording in enumerate(recordings, 1):
            result = transcribe(url, model, recording.path, language=evaluation.language,
                                api_key=config.gateway.upstream_api_key)
            heard.append(result.get("text", ""))
            audio_seconds += float(result.get("duration") or 0)
            if i % 8 == 0 or i == len(recordings):
                context.log.info(f"transcribed {i}/{len(recordings)} recordings")
        wall = time.monotonic() - transcribing
        rows = []
        for condition in dict.fromkeys(r.condition for r in recordings):
            picked = [i for i, r in enumerate(recordings) if r.condition == condition]
            rows.append({"condition": condition, "recordings": len(picked),
                         "wer": word_error_rate([recordings[i].reference for i in picked],
                                                [heard[i] for i in picked])})
        wer = word_error_rate([r.reference for r in recordings], heard)
        base = current(store, "base_model", model)
        source = config.base_models[model].source
        store.backend.put_bytes(speech_card_key(model), card(
            model, source, base.get("license"), rows, wer, name).encode())
        worst = sorted(range(len(recordings)), key=lambda i: -jiwer.wer(
            normalise(recordings[i].reference) or "-", normalise(heard[i]) or "-"))[:5]
        return dg.MaterializeResult(metadata={
            "word_error_rate": round(wer, 4), "recordings": len(recordings),
            "audio_seconds": round(audio_seconds, 1),
            "real_time_factor": round(audio_seconds / wall, 2) if wall else None,
            "by_condition": dg.MetadataValue.md(
                "| condition | recordings | WER |\n|---|---|---|\n" + "\n".join(
                    f"| {r['condition']} | {r['recordings']} | {r['wer']:.3f} |" for r in rows)),
            "worst": dg.MetadataValue.json([{"said": recordings[i].reference,
                                             "heard": heard[i]} for i in worst]),
            "model_version": deployed["base_version"],
            "seconds": round(time.monotonic() - started, 1)})

    @dg.asset_check(asset=_evaluation, name="word_error_rate", blocking=True,
                    description=f"Word error rate at most {evaluation.max_wer}.",
                    automation_condition=WITH_ITS_ASSET)
    def _bound(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        event = context.instance.get_latest_materialization_event(
            dg.AssetKey(["transcription_eval", name]))
        assert event is not None and event.asset_materialization is not None
        wer = event.asset_materialization.metadata["word_error_rate"].value
        return dg.AssetCheckResult(passed=bool(wer <= evaluation.max_wer), metadata={
            "word_error_rate": wer, "max_wer": evaluation.max_wer})

    return [_evaluation, _bound]
