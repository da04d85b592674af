"""Training methods with Axolotl on the CPU (a few steps of a tiny model each), validation before
compute, resuming a killed run from the object store, and offline W&B tracking."""

from __future__ import annotations

import json
import logging
import math
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import dagster as dg
import psutil
import pytest
import yaml

from config.loading import ConfigError
from config.objectives import OBJECTIVES
from pipelines.graph import make_definitions, resources_for
from resources.object_store import ObjectStore
from tests.support.training import FEW, materialize, metadata, write_project
from training.checkpoints import Checkpoints
from worker.checkpoints import remove_unfinished
from worker.train import trainer_state


@pytest.mark.slow
def test_sft_dpo_cpt_and_full_fine_tuning_train_on_the_cpu(tmp_path: Path) -> None:
    config = write_project(tmp_path, {
        "sft": {"base_model": "tiny", "dataset": "chat", "training": FEW},
        "dpo": {"base_model": "tiny", "dataset": "prefs", "objective": "dpo", "training": FEW,
                "sweep": {"training.learning_rate": [1e-7, 2e-3]}},
        "cpt": {"base_model": "tiny", "dataset": "text", "objective": "cpt", "training": FEW},
        "full": {"base_model": "tiny", "dataset": "chat", "method": "full", "training": FEW},
    })
    trained = ("sft", "dpo-trial1", "dpo-trial2", "cpt", "full")
    result = materialize(config, "base_model/tiny", "dataset/chat", "dataset/prefs",
                         "dataset/text", *(f"adapter/{name}" for name in trained), "adapter/dpo")
    store = resources_for(config)["store"]
    for name in trained:
        meta = metadata(result, f"adapter/{name}")
        assert meta["steps"] == 4, name
        assert meta["peak_memory_mib"] > 0 and meta["final_loss"] == meta["final_loss"]  # not NaN
        folder = store.local_dir(store.read_ref(f"adapter/{name}")["prefix"])
        weights = "model.safetensors" if name == "full" else "adapter_model.safetensors"
        assert (folder / weights).is_file(), name
        assert "offline-run-" in meta["wandb_run"]  # tracked by the real W&B client, offline
        assert any(Path(meta["wandb_run"]).glob("run-*.wandb"))
    assert "rl: dpo" in metadata(result, "adapter/dpo-trial2")["axolotl_yaml"]
    # DPO eval loss on held-out pairs: a policy still equal to its reference scores ln 2, a
    # trained one less; the sweep keeps the trained one
    still, trained_dpo = (metadata(result, f"adapter/dpo-trial{i}")["eval_loss"] for i in (1, 2))
    assert abs(still - math.log(2)) < 0.01 and 0 < trained_dpo < math.log(2) - 0.01
    assert metadata(result, "adapter/dpo")["best_trial"] == "dpo-trial2"
    assert "type: completion" in metadata(result, "adapter/cpt")["axolotl_yaml"]
    checks = {(c.asset_key.to_user_string(), c.check_name): c.passed
              for c in result.get_asset_check_evaluations()}
    assert checks[("adapter/full", "peft_format")] and checks[("adapter/dpo-trial2", "peft_format")]


@pytest.mark.slow
def test_every_preference_method_trains_on_the_same_pairs(tmp_path: Path) -> None:
    """IPO and SimPO read the pairs as DPO does; ORPO and KTO get them reshaped (whole
    conversations per side; unpaired replies marked good or bad): each passes Axolotl's
    validation, trains, and stores a servable adapter."""
    methods = ("ipo", "simpo", "orpo", "kto")
    adapters = {m: {"base_model": "tiny", "dataset": "prefs", "objective": m, "training": FEW}
                for m in methods}
    adapters["kto-rated"] = {**adapters["kto"], "dataset": "rated"}  # unpaired ratings
    config = write_project(tmp_path, adapters)
    result = materialize(config, "base_model/tiny", "dataset/prefs", "dataset/rated",
                         *(f"adapter/{m}" for m in adapters))
    store = resources_for(config)["store"]
    for name, recipe in adapters.items():
        meta = metadata(result, f"adapter/{name}")
        assert meta["steps"] == 4 and meta["final_loss"] == meta["final_loss"], name
        rendered = yaml.safe_load(meta["axolotl_yaml"].split("```yaml\n")[1].split("```")[0])
        trainer = OBJECTIVES[recipe["objective"]].trainer
        assert all(rendered[k] == v for k, v in trainer.items()), name
        folder = store.local_dir(store.read_ref(f"adapter/{name}")["prefix"])
        assert (folder / "adapter_model.safetensors").is_file(), name
    shaped = tmp_path / "work" / "runs" / "adapter"
    kto = [json.loads(line) for line in next(shaped.glob("kto/*/data/train.jsonl")).open()]
    assert [r["label"] for r in kto[:2]] == [True, False]  # each pair: one good, one bad reply
    assert kto[0]["prompt"].endswith("<|assistant|>\n") and kto[0]["completion"].endswith(
        "<|end|>")
    rated = [json.loads(line)
             for line in next(shaped.glob("kto-rated/*/data/train.jsonl")).open()]
    assert len(rated) < 80 and {r["label"] for r in rated} == {True, False}  # one per question
    orpo = json.loads(next(shaped.glob("orpo/*/data/train.jsonl")).open().readline())
    assert [m["role"] for m in orpo["chosen"]][-2:] == ["user", "assistant"]
    assert orpo["chosen"][:-1] == orpo["rejected"][:-1]


@pytest.mark.slow
def test_one_recipe_trains_the_same_adapter_twice_and_another_seed_a_different_one(
        tmp_path: Path) -> None:
    """A seeded recipe is a function of its inputs: the LoRA matrices Axolotl initialises before
    the trainer seeds anything come from `training.seed` too, so a retrain gives the same bytes."""
    recipe = {"base_model": "tiny", "dataset": "chat", "training": FEW}
    config = write_project(tmp_path, {
        "sft": recipe, "twin": recipe,
        "reseeded": {**recipe, "training": {**FEW, "seed": 7}}})
    names = ("sft", "twin", "reseeded")
    materialize(config, "base_model/tiny", "dataset/chat", *(f"adapter/{n}" for n in names))
    store = resources_for(config)["store"]
    weights = {n: (store.local_dir(store.read_ref(f"adapter/{n}")["prefix"])
                   / "adapter_model.safetensors").read_bytes() for n in names}
    assert weights["sft"] == weights["twin"]
    assert weights["reseeded"] != weights["sft"]


@pytest.mark.slow
def test_a_bad_passthrough_key_fails_before_training_and_names_it(tmp_path: Path) -> None:
    config = write_project(tmp_path, {"odd": {
        "base_model": "tiny", "dataset": "chat", "training": FEW,
        "axolotl": {"learning_rate": "fast"}}})
    started = time.monotonic()
    result = materialize(config, "base_model/tiny", "dataset/chat", "adapter/odd",
                         raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE"
                   and e.step_key == "adapter__odd")
    problems = failure.step_failure_data.user_failure_data.metadata["problems"].value
    assert problems[0].startswith("adapters.odd.axolotl.learning_rate: ")
    run_dir = tmp_path / "work" / "runs" / "adapter" / "odd"
    # rejected inside the training process, before it loaded a model or started the trainer
    assert "Starting trainer" not in "".join(p.read_text() for p in run_dir.rglob("train.log"))
    assert not list(run_dir.rglob("checkpoint-*")) and not list(run_dir.rglob("final"))
    assert time.monotonic() - started < 120


def test_config_rejects_what_cannot_train_or_serve(tmp_path: Path) -> None:
    cases = {
        "method: qlora loads the base model in 4 bits": {"method": "qlora"},
        "cannot be served by vLLM multi-LoRA": {"lora": {"target_modules": ["embed_tokens"]}},
        "trains on preference data but datasets.chat is kind: sft": {"objective": "dpo"},
        "trains on preference data but datasets.rated is kind: feedback": {
            "objective": "dpo", "dataset": "rated"},
        "trains on feedback or preference data but datasets.chat is kind: sft": {
            "objective": "kto"},
        "sweep keys are training.<field> or lora.<field>": {"sweep": {"seed": [1, 2]}},
        r"sweep \{'training.max_stepz': 1\}: Extra inputs are not permitted": {
            "sweep": {"training.max_stepz": [1]}},
        "sweep: 18 combinations; at most 16": {"sweep": {"training.seed": list(range(6)),
                                                         "lora.r": [4, 8, 16]}},
    }
    for message, recipe in cases.items():
        with pytest.raises(ConfigError, match=message):
            write_project(tmp_path, {"a": {"base_model": "tiny", "dataset": "chat", **recipe}})
    with pytest.raises(ConfigError, match=r"adapters\.a-trial1: the name of a trial"):
        write_project(tmp_path, {
            "a": {"base_model": "tiny", "dataset": "chat", "sweep": {"lora.r": [4, 8]}},
            "a-trial1": {"base_model": "tiny", "dataset": "chat"}})


@pytest.mark.slow
def test_a_sweep_trains_every_combination_and_the_best_by_eval_loss_is_the_adapter(
        tmp_path: Path) -> None:
    def sweep(rates: list[float]) -> Any:
        config = write_project(tmp_path, {"math": {
            "base_model": "tiny", "dataset": "chat", "training": FEW,
            "sweep": {"training.learning_rate": rates}}})
        trials = [f"adapter/math-trial{i}" for i in range(1, len(rates) + 1)]
        return config, materialize(config, "base_model/tiny", "dataset/chat", *trials,
                                   "adapter/math")

    config, result = sweep([1e-6, 3e-3])
    losses = {t: metadata(result, f"adapter/{t}")["eval_loss"] for t in ("math-trial1",
                                                                          "math-trial2")}
    # 4 steps at 1e-6 barely move the weights; at 3e-3 the val loss drops
    assert losses["math-trial2"] < losses["math-trial1"]
    chosen = metadata(result, "adapter/math")
    assert (chosen["best_trial"], chosen["best_eval_loss"]) == ("math-trial2",
                                                                losses["math-trial2"])
    assert "| math-trial2 | 0.003 |" in chosen["trials"]
    store = resources_for(config)["store"]
    assert store.read_ref("adapter/math")["prefix"] == store.read_ref(
        "adapter/math-trial2")["prefix"]  # what is evaluated and served is the winner
    manifest = store.manifest(store.read_ref("adapter/math-trial2")["prefix"])
    assert manifest["packages"]["axolotl"] == "0.19.0" and manifest["steps"] == FEW["max_steps"]
    # one more value: the two finished trials are reused, only the new one trains
    _, again = sweep([1e-6, 3e-3, 1e-2])
    reused = {t: metadata(again, f"adapter/math-trial{t}")["reused"] for t in (1, 2, 3)}
    assert reused == {1: True, 2: True, 3: False}
    winner = metadata(again, "adapter/math")["best_trial"]
    assert winner in ("math-trial2", "math-trial3")
    # the registry view lists every trial's version and where the sweep points
    from click.testing import CliRunner

    from pipelines.cli import main

    shown = CliRunner().invoke(main, ["adapters", "--config", str(tmp_path / "factory.yaml")])
    assert shown.exit_code == 0, shown.output
    for trial in ("math-trial1", "math-trial2", "math-trial3"):
        version = store.read_ref(f"adapter/{trial}")["version"]
        assert re.search(rf"{trial}:\n  {version} .* steps=4 .*CURRENT", shown.output)
    assert f"math:\n  -> {winner}@" in shown.output


def test_training_runs_share_a_pool_and_have_a_max_runtime(tmp_path: Path) -> None:
    from pipelines.runs import dagster_home

    config = write_project(tmp_path, {"sft": {"base_model": "tiny", "dataset": "chat"}})
    defs = make_definitions(config)
    adapter = defs.resolve_assets_def(dg.AssetKey(["adapter", "sft"]))
    assert adapter.op.pool == "train-local-cpu"
    automation = defs.resolve_sensor_def("automation")
    assert automation.run_tags["dagster/max_runtime"] == "21600"  # what it launches, too
    settings = yaml.safe_load((dagster_home(config) / "dagster.yaml").read_text())
    assert settings["run_monitoring"]["enabled"] is True
    assert settings["concurrency"]["pools"]["default_limit"] == 1


@pytest.mark.slow
def test_a_killed_run_resumes_from_the_stored_checkpoint(tmp_path: Path) -> None:
    long = {**FEW, "max_steps": 1500, "checkpoint_every": 100}
    config = write_project(tmp_path, {"long": {"base_model": "tiny", "dataset": "chat",
                                               "training": long}})
    materialize(config, "base_model/tiny", "dataset/chat")
    store = resources_for(config)["store"]
    first = subprocess.Popen([sys.executable, "-c", (
        "from config.loading import load_config; from tests.support.training import materialize;"
        f"materialize(load_config({str(tmp_path / 'factory.yaml')!r}), 'adapter/long', "
        "raise_on_error=False)")], cwd=Path(__file__).parents[2])
    deadline = time.monotonic() + 300
    while not [k for k in store.list("checkpoints/adapter/long/") if k.endswith("_MANIFEST.json")]:
        assert time.monotonic() < deadline and first.poll() is None, "no checkpoint was stored"
        time.sleep(0.5)
    for proc in psutil.process_iter(["cmdline"]):  # this test's worker box dies mid-run
        command = " ".join(proc.info["cmdline"] or [])
        if "axolotl" in command and str(tmp_path) in command:  # axolotl train <this test's yaml>
            worker = next(p for p in [proc, *proc.parents()] if "worker.train" in p.cmdline())
            for p in [*worker.children(recursive=True), worker]:
                p.kill()
            break
    else:
        pytest.fail("this test's training process was not found")
    first.wait(120)
    run_dirs = list((tmp_path / "work" / "runs" / "adapter" / "long").iterdir())
    for run_dir in run_dirs:  # the retry lands on a fresh machine: only the store remains
        subprocess.run(["rm", "-rf", str(run_dir)], check=True)
    stored = max(int(k.split("checkpoint-")[1].split("/")[0])
                 for k in store.list("checkpoints/adapter/long/") if k.endswith("_MANIFEST.json"))
    assert 0 < stored < 1500
    meta = metadata(materialize(config, "adapter/long"), "adapter/long")
    assert meta["resumed_from_step"] == stored
    assert meta["steps"] == 1500
    assert not store.list("checkpoints/adapter/long/")  # discarded once published


def test_a_checkpoint_cut_short_by_a_crash_is_never_stored_or_resumed_from(tmp_path: Path) -> None:
    """The trainer writes trainer_state.json last but in place: a box dying during that write
    leaves a folder that looks done, and resuming from it would crash the retry."""
    run_dir = tmp_path / "run"
    state = json.dumps({"global_step": 100, "log_history": [{"loss": 5.0, "step": 100}]})
    for step, text in [(100, state), (200, state.replace("100", "200")[:20]), (300, None)]:
        folder = run_dir / f"checkpoint-{step}"
        folder.mkdir(parents=True)
        (folder / "adapter_model.safetensors").write_bytes(b"weights")
        if text is not None:
            (folder / "trainer_state.json").write_text(text)
    store = ObjectStore(url="file://store", root=str(tmp_path))
    checkpoints = Checkpoints(store, "checkpoints/adapter/a/v1", run_dir, logging.getLogger())

    checkpoints.upload_new()
    assert checkpoints.stored() == ["checkpoint-100"]
    assert remove_unfinished(run_dir) == ["checkpoint-200", "checkpoint-300"]
    assert sorted(p.name for p in run_dir.iterdir()) == ["checkpoint-100"]
    assert checkpoints.restore() == 100
    assert trainer_state(run_dir)["log_history"] == [{"loss": 5.0, "step": 100}]


def test_checkpoints_that_cannot_be_stored_fail_the_run_instead_of_passing_silently(
        tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    (run_dir / "checkpoint-10").mkdir(parents=True)
    (run_dir / "checkpoint-10" / "trainer_state.json").write_text('{"global_step": 10}')
    (tmp_path / "store").write_text("a file where the store's folder should be")
    store = ObjectStore(url="file://store", root=str(tmp_path))
    checkpoints = Checkpoints(store, "checkpoints/adapter/a/v1", run_dir, logging.getLogger(),
                              poll_s=0.05)
    with pytest.raises(RuntimeError, match="could not be stored"), checkpoints.mirrored():
        time.sleep(0.5)  # the training run
