"""`source: hf:<org>/<repo>` without hub access: a local Hugging Face cache laid out as the hub
writes it (HF_HUB_CACHE, offline) provides the snapshot; the commit the revision resolves to is
the version, the card's licence is recorded, the tokenizer's chat template arrives as it is; a
model the cache lacks fails naming the model and the setting."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from config.loading import load_config
from pipelines.graph import resources_for
from pipelines.runs import failed_steps, materialize

COMMIT = "0123456789abcdef0123456789abcdef01234567"
TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def hub_cache(root: Path) -> Path:
    """models--acme--tiny-chat at COMMIT, main pointing at it, as `hf download` leaves it."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    repo = root / "hub" / "models--acme--tiny-chat"
    snapshot = repo / "snapshots" / COMMIT
    words = ["<unk>", "<|end|>", "<|user|>", "<|assistant|>", "hello", "world"]
    raw = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="<unk>",
                                        eos_token="<|end|>")
    tokenizer.chat_template = TEMPLATE
    tokenizer.save_pretrained(snapshot)
    LlamaForCausalLM(LlamaConfig(vocab_size=len(words), hidden_size=16, intermediate_size=32,
                                 num_hidden_layers=1, num_attention_heads=2,
                                 num_key_value_heads=1)).save_pretrained(snapshot)
    (snapshot / "README.md").write_text("---\nlicense: apache-2.0\n---\n# tiny chat\n")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    return root / "hub"


@pytest.fixture
def offline_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HF_HUB_CACHE", str(hub_cache(tmp_path)))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    return tmp_path


def project(root: Path, source: str, revision: str | None = None) -> Path:
    (root / "factory.yaml").write_text(yaml.safe_dump({
        "storage": {"object_store": "file://store", "work_dir": "work"},
        "base_models": {"hubby": {"source": source,
                                  **({"revision": revision} if revision else {})}}}))
    return root / "factory.yaml"


def test_a_cached_hub_snapshot_becomes_the_base_model(offline_hub: Path) -> None:
    config = load_config(project(offline_hub, "hf:acme/tiny-chat"))
    result = materialize(config, ["base_model/hubby"])
    assert failed_steps(result) == ([], [])
    store = resources_for(config)["store"]
    ref = store.read_ref("base_model/hubby")
    assert (ref["revision"], ref["license"]) == (COMMIT, "apache-2.0")
    folder = store.local_dir(ref["prefix"])
    saved = json.loads((folder / "tokenizer_config.json").read_text())
    template = saved.get("chat_template") or (folder / "chat_template.jinja").read_text()
    assert template == TEMPLATE  # the model's own template, untouched
    assert (folder / "model.safetensors").is_file() and (folder / "config.json").is_file()
    # pinned to the same commit: nothing is published again
    pinned = load_config(project(offline_hub, "hf:acme/tiny-chat", revision=COMMIT))
    again = materialize(pinned, ["base_model/hubby"])
    materialization = again.asset_materializations_for_node("base_model__hubby")[0]
    assert materialization.metadata["reused"].value is True
    assert store.read_ref("base_model/hubby")["prefix"] == ref["prefix"]


def test_a_model_the_cache_lacks_fails_naming_it_and_the_setting(offline_hub: Path) -> None:
    config = load_config(project(offline_hub, "hf:acme/not-downloaded", revision="v2"))
    result = materialize(config, ["base_model/hubby"])
    (failure,) = [e for e in result.all_events  # type: ignore[attr-defined]
                  if e.event_type_value == "STEP_FAILURE"]
    message = failure.step_failure_data.error.message
    assert "base_model/hubby: hf:acme/not-downloaded@v2 is not in the Hugging Face cache" in message
    assert "HF_HUB_OFFLINE is set" in message
    assert "`hf download acme/not-downloaded --revision v2`" in message
    assert "set HF_HUB_CACHE to it" in message
