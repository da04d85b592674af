"""Test projects: a file of tests/configs/ materialized whole in a temporary folder (its vLLM
servers stopped afterwards), and the second project, written out for any test that needs it."""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import yaml

from config.loading import load_config
from config.schema import FactoryConfig
from pipelines.scaffold import ticket_rows, write_project
from tests.support.live_server import free_port

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent


def materialized(config_name: str, root: Path, folders: dict[str, Path] | None = None
                 ) -> Iterator[tuple[FactoryConfig, object]]:
    """tests/configs/<config_name> as `root`/factory.yaml with `folders` copied beside it (name
    in the project: folder), materialized in process; yields (config, the run's result)."""
    from pipelines.graph import resources_for
    from pipelines.runs import materialize

    shutil.copy(TESTS / "configs" / config_name, root / "factory.yaml")
    for name, folder in (folders or {}).items():
        shutil.copytree(folder, root / name)
    config = load_config(root / "factory.yaml")
    result = materialize(config)
    try:
        yield config, result
    finally:
        vllm = resources_for(config)["vllm"]
        for name in config.deployments:
            for server in vllm.servers_of(name):
                vllm.stop(server)


PACKAGES = ("bash", "coreutils", "tar", "gzip", "grep", "sed", "findutils")
QUESTIONS = [
    ("Who originally wrote GNU tar, based on John Gilmore's public domain tar?", "tar"),
    ("Who put together the Debian package of the Bourne Again SHell?", "bash"),
    ("Who maintains the Debian package of the GNU core utilities?", "coreutils"),
    ("Jean-loup Gailly and Mark Adler hold which program's early copyright?", "gzip"),
    ("Who maintains Debian's prepackaged version of sed?", "sed"),
]


def second_project(root: Path) -> None:
    """A project unlike the demo in `root`: `factory init`'s support tickets, the same tickets
    as an alpaca CSV, preference pairs for a DPO adapter, a second recipe and the mixture of
    both served beside the first (monitored: a failed check re-runs the served evaluation), and
    a corpus of real documents found on every Debian machine (package copyright files) with
    questions naming them."""
    write_project(root, "support")
    chats = ticket_rows(120, seed=2)
    with (root / "data" / "more-tickets.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["instruction", "input", "output"])
        for row in chats:
            *_, user, reply = row["messages"]
            writer.writerow(["Triage this support ticket.", user["content"], reply["content"]])
    with (root / "data" / "prefs.jsonl").open("w") as f:
        for row in chats:
            *history, reply = row["messages"]
            wrong = reply["content"].replace("Category: billing", "Category: shipping") \
                if "billing" in reply["content"] else reply["content"].replace(
                    "Category: ", "Category: billing-", 1)
            f.write(json.dumps({"prompt": history, "chosen": reply["content"],
                                "rejected": wrong}) + "\n")
    (root / "packages").mkdir()
    for package in PACKAGES:
        shutil.copy(f"/usr/share/doc/{package}/copyright",
                    root / "packages" / f"{package}-copyright.txt")
    (root / "packages-questions.jsonl").write_text("".join(
        json.dumps({"question": q, "source": f"{p}-copyright.txt"}) + "\n"
        for q, p in QUESTIONS))
    raw = yaml.safe_load((root / "factory.yaml").read_text())
    raw["datasets"]["tickets"]["sources"].append({"path": "data/more-tickets.csv"})
    raw["datasets"]["ticket-prefs"] = {"kind": "preference", "base_model": "base",
                                       "sources": [{"path": "data/prefs.jsonl"}]}
    raw["adapters"]["triage-dpo"] = {
        "base_model": "base", "dataset": "ticket-prefs", "objective": "dpo",
        "training": {"max_steps": 10, "micro_batch_size": 4, "sequence_len": 256,
                     "learning_rate": 0.0005}}
    raw["corpora"]["packages"] = {"source": {"path": "packages"}, "top_k": 3,
                                  "questions": "packages-questions.jsonl"}
    # a second recipe and the mixture of both, served beside the first
    raw["adapters"]["triage-b"] = {
        "base_model": "base", "dataset": "tickets", "lora": {"r": 8, "alpha": 16},
        "training": {"max_steps": 20, "micro_batch_size": 8, "learning_rate": 0.001,
                     "sequence_len": 256, "seed": 1}}
    raw["evaluations"]["triage-b-eval"] = {**raw["evaluations"]["triage-eval"],
                                           "adapter": "triage-b", "limit": 20}
    raw["mixtures"] = {"triage-mix": {"base_model": "base",
                                      "adapters": {"triage": 0.7, "triage-b": 0.3},
                                      "search": {"step": 0.5, "rows": 8}}}
    raw["deployments"] = {"support": {
        "base_model": "base", "adapters": ["triage", "triage-mix"], "port": free_port(),
        "evaluate": {"limit": 40, "max_new_tokens": 24, "timing_requests": 4},
        "monitor": {"window_s": 300, "on_failure": "reevaluate",
                    "drift": {"min_prompts": 20, "sample": 40}}}}
    (root / "factory.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


def run_assets(defs: dg.Definitions, *keys: str, instance: dg.DagsterInstance | None = None,
               raise_on_error: bool = True) -> dg.ExecuteInProcessResult:
    """One run of the assets named ("corpus/notes") with their checks, as the automation sensor
    launches them when their inputs changed."""
    return defs.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=instance or dg.DagsterInstance.ephemeral(), raise_on_error=raise_on_error,
        asset_selection=[dg.AssetKey(key.split("/")) for key in keys])
