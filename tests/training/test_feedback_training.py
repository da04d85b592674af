"""A feedback-driven retrain on a real model (issue #43): a served model answered support
tickets badly (the fake engine's replies), people corrected each reply through the gateway, and
the graph turns those corrections into a KTO dataset (the correction desirable, the reply not)
and a DPO dataset (the correction chosen over the reply), trains an adapter on each on
SmolLM2-135M-Instruct through Axolotl, and the promotion gate judges each against the base on
held-out rated prompts. The figures are printed for docs/figures.md."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from config.loading import load_config
from pipelines.cli import main
from pipelines.graph import resources_for
from pipelines.scaffold import ticket_rows, write_project
from tests.support.capture import ADMIN_ENV, ADMIN_TOKEN, running_gateway

TRAINING = {"max_steps": 12, "micro_batch_size": 4, "sequence_len": 256,
            "learning_rate": 0.0005}
# ROUGE-L against the corrections: twelve steps teach the reply's shape, not yet the category
EVALUATION = {"limit": 12, "max_new_tokens": 16, "promotion": {"margin": 0.05}}


@pytest.mark.slow
def test_corrections_train_kto_and_dpo_adapters_on_smollm2_and_the_gate_judges_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv(ADMIN_ENV, ADMIN_TOKEN)
    for kept in running_gateway("sqlite", tmp_path / "gateway"):
        tenant = kept.project("request")
        for row in ticket_rows(60, seed=7):
            *history, answer = row["messages"]
            reply = kept.ask(tenant, "", messages=history)
            kept.rate(tenant, reply["id"], correction=answer["content"])

        root = tmp_path / "support"
        write_project(root, "support")
        raw = yaml.safe_load((root / "factory.yaml").read_text())
        source = {"traffic": tenant.project, "model": "adapter-a"}
        common = {"base_model": "base", "sources": [source], "split": {"val": 0.0, "test": 0.2}}
        raw |= {"gateway": {"url": kept.url, "admin_token_env": ADMIN_ENV},
                "datasets": {"thumbs": {"kind": "feedback", **common},
                             "choices": {"kind": "preference", **common}},
                "adapters": {name: {"base_model": "base", "dataset": data, "objective": goal,
                                    "lora": {"r": 8, "alpha": 16}, "training": TRAINING}
                             for name, data, goal in (("triage-kto", "thumbs", "kto"),
                                                      ("triage-dpo", "choices", "dpo"))},
                "evaluations": {f"{name}-eval": {"adapter": name, **EVALUATION}
                                for name in ("triage-kto", "triage-dpo")}}
        raw.pop("corpora")
        (root / "factory.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
        ran = CliRunner().invoke(main, ["materialize", "--config", str(root / "factory.yaml"),
                                        "--select", "evaluation/triage-kto-eval",
                                        "--select", "evaluation/triage-dpo-eval"])
        assert ran.exit_code == 0, ran.output

    store = resources_for(load_config(root / "factory.yaml"))["store"]
    thumbs, choices = store.read_ref("dataset/thumbs"), store.read_ref("dataset/choices")
    for dataset in (thumbs, choices):  # all 60 corrections read; repeated tickets deduplicated
        assert dataset["traffic"][tenant.project]["feedback"] == 60
    assert 60 < sum(thumbs["counts"].values()) <= 120  # a good and a bad reply per correction
    assert 30 < sum(choices["counts"].values()) <= 60  # the correction chosen over the reply
    for name in ("triage-kto", "triage-dpo"):
        evaluation = store.read_ref(f"evaluation/{name}-eval")
        base, tuned = evaluation["scores"]["base"], evaluation["scores"]["candidate"]
        print(f"{name}: ROUGE-L base {base['rougeL']:.3f} -> adapter {tuned['rougeL']:.3f}, "
              f"perplexity {base['perplexity']:.2f} -> {tuned['perplexity']:.2f}; "
              f"gate {evaluation['gate']}")
        assert tuned["rougeL"] > base["rougeL"] + 0.05  # it learnt from the corrections
        assert evaluation["gate"].startswith("PROMOTE (vs base): rougeL")
