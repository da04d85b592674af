"""Training test projects: a tiny base model and adapters with a few steps, materialized in
process."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dagster as dg
import yaml

from config.loading import load_config
from config.schema import FactoryConfig
from ingest.demo_data import filings, math_problems
from pipelines.graph import make_definitions

TINY = {"source": "local", "pretrain": None,
        "architecture": {"hidden_size": 64, "num_layers": 1, "num_heads": 2,
                         "intermediate_size": 128, "vocab_size": 400,
                         "max_position_embeddings": 128}}


FEW = {"max_steps": 4, "micro_batch_size": 4, "sequence_len": 128, "warmup_steps": 0}


def write_project(root: Path, adapters: dict[str, Any]) -> FactoryConfig:
    for folder in ("prefs", "rated", "docs"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    with (root / "prefs" / "pairs.jsonl").open("w") as f, \
            (root / "rated" / "replies.jsonl").open("w") as rated:
        for i, row in enumerate(math_problems.generate(80, seed=2)):
            right = row["messages"][-1]["content"]
            wrong = right.replace("####", "#### 1")
            f.write(json.dumps({"prompt": row["messages"][1]["content"], "chosen": right,
                                "rejected": wrong}) + "\n")
            # unpaired: each question rated once, as a feedback export writes it
            rated.write(json.dumps({"messages": [*row["messages"][:-1], {
                "role": "assistant", "content": wrong if i % 3 == 0 else right}],
                "label": "thumbs_down" if i % 3 == 0 else "thumbs_up"}) + "\n")
    for doc in filings.generate(6, seed=2):
        (root / "docs" / f"{doc.doc_id}.txt").write_text(doc.text)
    (root / "factory.yaml").write_text(yaml.safe_dump({
        "storage": {"object_store": "file://store", "work_dir": "work"},
        "base_models": {"tiny": TINY},
        "datasets": {
            "chat": {"sources": [{"generator": "math_word_problems", "rows": 120}],
                     "base_model": "tiny"},
            "prefs": {"kind": "preference", "sources": [{"path": "prefs"}],
                      "base_model": "tiny"},
            "rated": {"kind": "feedback", "sources": [{"path": "rated"}],
                      "base_model": "tiny"},
            "text": {"kind": "pretrain", "sources": [{"path": "docs"}], "base_model": "tiny",
                     "block_size": 64, "split": {"val": 0.0, "test": 0.2},
                     "quality": {"min_test": 1}},
        },
        "adapters": adapters,
    }))
    return load_config(root / "factory.yaml")


def materialize(config: FactoryConfig, *keys: str, raise_on_error: bool = True,
                instance: dg.DagsterInstance | None = None) -> Any:
    defs = make_definitions(config)
    selection = [dg.AssetKey(k.split("/")) for k in keys]
    return defs.resolve_job_def("everything").execute_in_process(
        instance=instance or dg.DagsterInstance.ephemeral(), asset_selection=selection,
        raise_on_error=raise_on_error)


def metadata(result: Any, key: str) -> dict[str, Any]:
    (event,) = [e for e in result.get_asset_materialization_events()
                if e.asset_key.to_user_string() == key]
    return {k: v.value for k, v in event.materialization.metadata.items()}
