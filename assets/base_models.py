"""Base model assets: a tiny Llama built and pre-trained here (`local`), or a hub model (`hf:`)."""


import json
import shutil
import time
from pathlib import Path

import dagster as dg

from assets.axolotl_config import render_pretrain
from assets.common import (
    Definition,
    current,
    fail_if_axolotl_rejects,
    loss_curve,
    publish,
    reuse_if_complete,
    store_link,
    version_of,
)
from assets.demo_data import filings, math_problems
from config.schema import BaseModelSpec, FactoryConfig, Pretrain
from resources.compute import WorkerCompute
from resources.object_store import ObjectStore

BUILDER_VERSION = "tiny-llama-v4"  # bump when the builder or its corpus changes


def pretrain_texts(pretrain: Pretrain, seed: int) -> list[str]:
    """Filing prose (language), arithmetic drills and little arithmetic stories, never the
    instruction format: the adapter has to teach the chat/answer format, so the eval delta
    measures the fine-tuning."""
    texts = [f.text for f in filings.generate(pretrain.corpus_documents, seed)]
    lines = pretrain.arithmetic_lines
    drills = list(math_problems.arithmetic_drills(lines, seed))
    # short rows (about 100 tokens) so little of each batch is padding
    texts += ["\n".join(drills[i:i + 10]) for i in range(0, len(drills), 10)]
    stories = list(math_problems.narratives(2 * lines, seed + 2))
    texts += [" ".join(stories[i:i + 3]) for i in range(0, len(stories), 3)]
    return texts


def tokenizer_texts(spec: BaseModelSpec) -> list[str]:
    """The tokenizer also sees word-problem vocabulary so names and items are single tokens."""
    rows = math_problems.generate(500, spec.seed + 1)
    problems = [" ".join(m["content"] for m in r["messages"]) for r in rows]  # type: ignore[index]
    corpus = pretrain_texts(spec.pretrain or Pretrain(), spec.seed)  # even if not pre-trained
    return [t.replace("\n", " ") for t in corpus + problems]


def build_local(context: dg.AssetExecutionContext, name: str, spec: BaseModelSpec,
                run_dir: Path, worker: WorkerCompute) -> tuple[Path, dict[str, object]]:
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    (run_dir / "tokenizer_corpus.txt").write_text("\n".join(tokenizer_texts(spec)))
    init_dir = run_dir / "init"
    (msg,) = worker.run(context, "build_base_model", {
        "output_dir": str(init_dir), "architecture": spec.architecture.model_dump(),
        "tokenizer_corpus": str(run_dir / "tokenizer_corpus.txt"), "seed": spec.seed,
    })
    meta: dict[str, object] = {"parameters": msg["parameters"], "vocab_size": msg["vocab_size"]}
    if spec.pretrain is None:
        return init_dir, meta
    with (run_dir / "pretrain.jsonl").open("w") as f:
        for text in pretrain_texts(spec.pretrain, spec.seed):
            f.write(json.dumps({"text": text}) + "\n")
    yaml_text = render_pretrain(spec.pretrain, spec.seed, init_dir, run_dir / "pretrain.jsonl",
                                run_dir / "pretrain", target=worker.target)
    (summary,) = worker.run(context, "train", {
        "output_dir": str(run_dir / "pretrain"), "axolotl_yaml": yaml_text, "adapter": False,
    })
    fail_if_axolotl_rejects(f"the pre-training of base model {name}", summary.get("problems", []))
    final = run_dir / "pretrain" / "final"
    history = json.loads((final / "training_log.json").read_text())
    meta |= {
        "pretrain_steps": summary["steps"],
        "pretrain_final_loss": float(summary["final_loss"] or "nan"),
        "pretrain_seconds": summary["wall_seconds"],
        "pretrain_loss_curve": loss_curve(history, f"{name}: pre-training loss"),
        "axolotl_yaml": dg.MetadataValue.md(f"```yaml\n{yaml_text}```"),
    }
    return final, meta


def download_hf(repo_id: str, revision: str | None, dest: Path) -> str:
    """Real deployments: fetch a hub model (needs network and, for gated models, HF_TOKEN)."""
    from huggingface_hub import HfApi, snapshot_download

    sha = HfApi().model_info(repo_id, revision=revision).sha
    snapshot_download(repo_id, revision=sha, local_dir=dest,
                      allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"])
    return sha or "unknown"


def base_model_asset(name: str, spec: BaseModelSpec, config: FactoryConfig) -> list[Definition]:
    @dg.asset(
        key=["base_model", name], group_name="models", kinds={"pytorch", "axolotl"},
        pool=config.compute.pool,
        description=f"Base model '{name}' ({spec.source}); every adapter of it trains on this.",
    )
    def _base_model(context: dg.AssetExecutionContext, store: ObjectStore,
                    worker: WorkerCompute) -> dg.MaterializeResult:
        started = time.monotonic()
        run_dir = config.work_dir / "runs" / "base_model" / name
        if spec.source == "local":
            version = version_of(BUILDER_VERSION, spec.model_dump())
            ref = reuse_if_complete(store, "base_model", name, version, source=spec.source)
            meta: dict[str, object] = {"reused": ref is not None}
            if ref is None:
                model_dir, built = build_local(context, name, spec, run_dir, worker)
                ref = publish(store, "base_model", name, version, model_dir, source=spec.source,
                              **{k: v for k, v in built.items() if k in ("parameters",)})
                meta |= built
        else:
            repo_id = spec.source.removeprefix("hf:")
            shutil.rmtree(run_dir, ignore_errors=True)
            sha = download_hf(repo_id, spec.revision, run_dir / "download")
            version = version_of(repo_id, sha)
            ref = publish(store, "base_model", name, version, run_dir / "download",
                          source=spec.source, revision=sha)
            meta = {"revision": sha}
        ref = current(store, "base_model", name)
        return dg.MaterializeResult(
            metadata={**meta, "version": ref["version"], "source": spec.source,
                      "location": store_link(store, ref["prefix"]),
                      "seconds": round(time.monotonic() - started, 1)},
            data_version=dg.DataVersion(ref["version"]),
        )

    return [_base_model]
