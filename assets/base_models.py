"""Base model assets: a tiny Llama built and pre-trained here (`local`), a hub model (`hf:`),
or a file people hold converted to a Hugging Face folder (`gguf:` language models, `ct2:`
faster-whisper models)."""


import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg

from assets.common import (
    WITH_ITS_ASSET,
    Definition,
    current,
    fail_if_axolotl_rejects,
    loss_curve,
    publish,
    reuse_if_complete,
    store_link,
    version_of,
)
from config.base_models import BaseModelSpec, Pretrain
from config.schema import FactoryConfig
from ingest.demo_data import filings, math_problems
from models.sources import (
    SourceMissing,
    content_hash,
    hub_snapshot,
    package_license,
    source_path,
)
from resources.compute import WorkerCompute
from resources.object_store import ObjectStore
from store.backends import ArtifactMissing
from store.keys import artifact_prefix
from training.axolotl_config import render_pretrain

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


def from_local(context: dg.AssetExecutionContext, name: str, spec: BaseModelSpec,
               config: FactoryConfig, store: ObjectStore, worker: WorkerCompute
               ) -> dict[str, object]:
    version = version_of(BUILDER_VERSION, spec.model_dump(exclude={"token_env"}))
    ref = reuse_if_complete(store, "base_model", name, version, source=spec.source)
    if ref is not None:
        return {"reused": True}
    model_dir, built = build_local(context, name, spec, work_folder(config, name), worker)
    publish(store, "base_model", name, version, model_dir, source=spec.source,
            parameters=built["parameters"])
    return {"reused": False, **built}


def from_hub(context: dg.AssetExecutionContext, name: str, spec: BaseModelSpec,
             config: FactoryConfig, store: ObjectStore, worker: WorkerCompute
             ) -> dict[str, object]:
    """A hub model as its snapshot has it (weights, tokenizer, chat template, card); the version
    is the commit it resolved to, so a moved branch is a new version and a pinned one is
    reused."""
    try:
        snapshot = hub_snapshot(spec.location, spec.revision, spec.token_env)
    except SourceMissing as exc:
        raise dg.Failure(f"base_model/{name}: {exc}") from exc
    version = version_of(spec.location, snapshot.revision)
    lineage = {"source": spec.source, "revision": snapshot.revision,
               "license": snapshot.license, "original_name": spec.location}
    reused = reuse_if_complete(store, "base_model", name, version, **lineage) is not None
    if not reused:
        publish(store, "base_model", name, version, snapshot.folder, **lineage)
    return {"reused": reused, "revision": snapshot.revision,
            "license": snapshot.license or "not declared in the model card",
            "snapshot": str(snapshot.folder)}


@dataclass(frozen=True)
class Conversion:
    """A format people hold, turned into a Hugging Face folder by a worker job whose `convert`
    mode writes the folder and `conversion.json` (facts and a reference recorded from the
    source) and whose `verify` mode replays that reference on the published folder."""

    job: str       # worker module
    marker: str    # '.suffix' of a source file, or the file a source folder holds
    argument: str  # the job's extra that names the source
    version: str   # bump when the job changes what it writes


CONVERSIONS = {
    "gguf": Conversion("convert_gguf", ".gguf", "gguf_file", "gguf-v1"),
    "ct2": Conversion("convert_ct2", "model.bin", "ct2_dir", "ct2-v1"),
}


def converted(context: dg.AssetExecutionContext, name: str, spec: BaseModelSpec,
              config: FactoryConfig, store: ObjectStore, worker: WorkerCompute
              ) -> dict[str, object]:
    """Convert the source once per content: the version is its sha256, so a renamed copy is
    reused and a changed file is converted again."""
    how = CONVERSIONS[spec.source_kind]
    location = spec.location
    try:
        source = source_path(location, config.root, how.marker,
                             joined_in=work_folder(config, name) / "joined")
    except SourceMissing as exc:
        raise dg.Failure(f"base_model/{name}: {exc}") from exc
    sha256 = content_hash(source)
    version = version_of(how.version, sha256)
    prefix = artifact_prefix("base_model", name, version)
    about = stored_conversion(store, prefix)
    reused = about is not None
    if about is None:
        out = work_folder(config, name) / "converted"
        shutil.rmtree(out, ignore_errors=True)
        (about,) = worker.run(context, how.job, {"mode": "convert", how.argument: str(source),
                                                 "output_dir": str(out)},
                              inputs=[source], outputs=[out])
        if "error" in about:
            raise dg.Failure(f"base_model/{name} (source {spec.source}): {about['error']}")
        facts = facts_of(about, location)
        publish(store, "base_model", name, version, out, source=spec.source,
                **lineage_of(facts, sha256))
    else:
        facts = facts_of(about, location)
        reuse_if_complete(store, "base_model", name, version, source=spec.source,
                          **lineage_of(facts, sha256))
    return {"reused": reused, "source_path": str(source), "source_sha256": sha256,
            **{k: dg.MetadataValue.json(v) if isinstance(v, dict | list) else v
               for k, v in facts.items() if k in SHOWN}}


def facts_of(about: dict[str, Any], location: str) -> dict[str, Any]:
    """A conversion's record without empty fields; the licence the file declares, else the
    one its package declares."""
    facts = {k: v for k, v in about.items() if v is not None}
    facts["license"] = about.get("license") or package_license(location)
    return facts


def lineage_of(facts: dict[str, Any], sha256: str) -> dict[str, Any]:
    """What the ref carries for model cards and the registry."""
    return {"parameters": facts["parameters"], "license": facts["license"],
            "original_name": facts.get("original_name"), "source_sha256": sha256}


SHOWN = ("original_name", "organization", "license", "quantization", "parameters",
         "context_length", "sample_reply", "english_only", "source_dtypes", "sample_transcript")
"""What a conversion's record shows in the asset's metadata."""


def stored_conversion(store: ObjectStore, prefix: str) -> dict[str, Any] | None:
    """What an earlier conversion of the same content recorded, if it completed."""
    try:
        store.manifest(prefix)
    except ArtifactMissing:
        return None
    about = store.get_json(f"{prefix}/conversion.json")
    return {k: v for k, v in about.items() if k != "reference"}


SOURCES: dict[str, Callable[..., dict[str, object]]] = {
    "local": from_local, "hf": from_hub, "gguf": converted, "ct2": converted}
"""How each kind of `source` becomes a published model folder; returns the asset's metadata."""


def work_folder(config: FactoryConfig, name: str) -> Path:
    return config.work_dir / "runs" / "base_model" / name


def base_model_asset(name: str, spec: BaseModelSpec, config: FactoryConfig) -> list[Definition]:
    @dg.asset(
        key=["base_model", name], group_name="models", kinds={"pytorch", "axolotl"},
        pool=config.compute.pool,
        description=f"Base model '{name}' ({spec.source}); every adapter of it trains on this.",
    )
    def _base_model(context: dg.AssetExecutionContext, store: ObjectStore,
                    worker: WorkerCompute) -> dg.MaterializeResult:
        started = time.monotonic()
        meta = SOURCES[spec.source_kind](context, name, spec, config, store, worker)
        ref = current(store, "base_model", name)
        return dg.MaterializeResult(
            metadata={**meta, "version": ref["version"], "source": spec.source,
                      "location": store_link(store, ref["prefix"]),
                      "seconds": round(time.monotonic() - started, 1)},
            data_version=dg.DataVersion(ref["version"]),
        )

    if spec.source_kind not in CONVERSIONS:
        return [_base_model]
    return [_base_model, reproduces_source_check(name, CONVERSIONS[spec.source_kind], _base_model)]


def reproduces_source_check(name: str, how: Conversion, asset: dg.AssetsDefinition
                            ) -> dg.AssetChecksDefinition:
    """A conversion is only as good as its agreement with the file it came from."""

    @dg.asset_check(name="reproduces_source", asset=asset, blocking=True,
                    description="The converted folder, loaded fresh, agrees with references "
                                "recorded from the source by other paths at conversion (a GGUF: "
                                "tensors as the gguf package dequantises them, ids from the "
                                "tokenizer transformers derives from the file, its greedy "
                                "tokens on fixed prompts).",
                    automation_condition=WITH_ITS_ASSET)
    def _reproduces(context: dg.AssetCheckExecutionContext, store: ObjectStore,
                    worker: WorkerCompute) -> dg.AssetCheckResult:
        folder = store.local_dir(current(store, "base_model", name)["prefix"])
        (result,) = worker.run(context.op_execution_context, how.job,
                               {"mode": "verify", "model_dir": str(folder)}, inputs=[folder])
        return dg.AssetCheckResult(passed=not result["problems"], metadata={
            k: dg.MetadataValue.json(v) if isinstance(v, dict | list) else v
            for k, v in result.items()})

    return _reproduces
