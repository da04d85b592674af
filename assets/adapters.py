"""Adapters trained with Axolotl in the worker environment, versioned by their inputs.

version = hash(base model version, dataset version, recipe, trainer pin): the same inputs reuse
the stored adapter instead of retraining; any change trains a new version beside the old one.
The rendered YAML is checked by Axolotl's own validation before anything trains; checkpoints are
mirrored to the object store, so a retry of a killed run resumes where it stopped.
"""


import json
import os
import shutil
import time
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
    reward_metadata,
    store_link,
    version_of,
)
from compute.memory import DoesNotFit, ModelShape, Recipe, check_fits, estimate
from config.adapters import AdapterSpec
from config.schema import FactoryConfig
from models.cards import write_card
from resources.compute import WorkerCompute
from resources.object_store import ObjectStore
from store.registry import Registry
from training.axolotl_config import (
    RecipeError,
    base_config,
    recipe_key,
    render_adapter,
    reshaped,
)
from training.checkpoints import Checkpoints
from worker.graders import blind_graders, judge_keys, keyless_judges

TRAINER = "axolotl==0.19.0"


def adapter_asset(name: str, spec: AdapterSpec, config: FactoryConfig) -> list[Definition]:
    start = spec.grpo.start_from if spec.grpo else None

    @dg.asset(
        key=["adapter", name], group_name="training", kinds={"axolotl", "peft"},
        pool=config.compute.pool,
        deps=[dg.AssetKey(["base_model", spec.base_model]), dg.AssetKey(["dataset", spec.dataset]),
              *([dg.AssetKey(["promotion", start])] if start else [])],
        description=f"{spec.method} {spec.objective} adapter '{name}': {spec.base_model} "
                    f"trained on {spec.dataset}.",
    )
    def _adapter(context: dg.AssetExecutionContext, store: ObjectStore,
                 worker: WorkerCompute, training: WorkerCompute) -> dg.MaterializeResult:
        started = time.monotonic()
        base = current(store, "base_model", spec.base_model)
        data = current(store, "dataset", spec.dataset)
        # GRPO's graders (the evaluation's scorer when none are declared) shape the weights
        graders = config.graders_of(name) if spec.objective == "grpo" else []
        starting = starting_point(store, name, start)
        version = version_of(base["version"], data["version"],
                             spec.model_dump(exclude={"card"}) | (
                                 {"graders": graders} if graders else {}) | (
                                 {"starts_from": starting["version"]} if starting else {}),
                             TRAINER)
        lineage = {"base_model": f"{spec.base_model}@{base['version']}",
                   "dataset": f"{spec.dataset}@{data['version']}", "trainer": TRAINER,
                   "method": spec.method, "objective": spec.objective, "lora_r": spec.lora.r,
                   **({"started_from": f"{start}@{starting['version']}"} if starting else {})}
        meta: dict[str, object] = {}
        ref = reuse_if_complete(store, "adapter", name, version, **lineage)
        if ref is not None:
            context.log.info(f"adapter {name}@{version} already trained on these inputs; reused")
        else:
            # kept between attempts of one version: its checkpoints are what a retry resumes
            run_dir = config.work_dir / "runs" / "adapter" / name / version
            shutil.rmtree(run_dir / "final", ignore_errors=True)
            base_dir = store.local_dir(base["prefix"])
            train_path = store.local_dir(data["prefix"]) / "train.jsonl"
            val_path = train_path.with_name("val.jsonl")
            has_val = val_path.is_file() and val_path.stat().st_size > 0
            train_path, *shaped_val = reshaped(spec.objective, base_dir, [
                train_path, *([val_path] if has_val else [])], run_dir / "data",
                {"graders": json.dumps(graders)} if graders else None)
            val_path = shaped_val[0] if shaped_val else val_path
            blind = blind_graders(graders, [json.loads(line)["reference"] for line in
                                            train_path.read_text().splitlines()]) \
                if graders else []
            if blind:
                raise dg.Failure(f"adapters.{name}.grpo." + "; ".join(blind) + ": fix the "
                                 "pattern (or the evaluation's answer_pattern it defaults to)")
            keyless = keyless_judges(graders, os.environ)
            if keyless:
                raise dg.Failure(f"adapters.{name}.grpo." + "; ".join(keyless))
            start_dir = store.local_dir(starting["prefix"]) if starting else None
            box = config.compute.gpu_box
            planned = planned_memory(context, name, spec, config, base_dir)
            try:
                yaml_text = render_adapter(
                    spec,
                    base_dir=base_dir,
                    train_path=train_path,
                    output_dir=run_dir,
                    tracking=config.tracking,
                    run_name=f"{name}-{version}",
                    target=training.target,
                    val_path=val_path if has_val else None,
                    gpus=box.count if box else 1,
                    graders=graders,
                    start_dir=start_dir,
                    generation_share=generation_share(spec, config, base_dir),
                )
            except RecipeError as exc:
                raise dg.Failure(f"adapters.{name}.{exc}") from exc
            if training.launches_a_machine:  # validated here, so a bad config starts no box
                (report,) = worker.run(context, "validate", {
                    "axolotl_yaml": yaml_text, "gpu": box.capabilities() if box else None})
                fail_on_problems(name, spec, report["problems"])
            checkpoints = Checkpoints(store, f"checkpoints/adapter/{name}/{version}", run_dir,
                                      context.log)
            resumed = checkpoints.restore()
            with checkpoints.mirrored():
                (summary,) = training.run(context, "train", {
                    "output_dir": str(run_dir), "axolotl_yaml": yaml_text,
                    "adapter": spec.method != "full", "gpus": box.count if box else 1,
                }, inputs=[base_dir, train_path, run_dir] + ([val_path] if has_val else []) + (
                    [start_dir] if start_dir else []),
                    outputs=[run_dir], secrets=judge_keys(graders))
            # the training process validates before it loads anything (one Axolotl import)
            fail_on_problems(name, spec, summary.get("problems", []))
            final = run_dir / "final"
            history = json.loads((final / "training_log.json").read_text())
            ref = publish(store, "adapter", name, version, final, **lineage,
                          eval_loss=summary["eval_loss"], final_loss=summary["final_loss"],
                          steps=summary["steps"], packages=summary["packages"])
            checkpoints.discard()
            tokens_per_s = (summary["samples_per_second"] or 0) * spec.training.sequence_len
            meta = {
                "steps": summary["steps"],
                "resumed_from_step": resumed if resumed is not None else "none",
                "first_loss": float(summary["first_loss"] or "nan"),
                "final_loss": float(summary["final_loss"] or "nan"),
                "eval_loss": float(summary["eval_loss"] or "nan"),
                "train_seconds": summary["wall_seconds"],
                "train_runtime_s": summary["train_runtime"],
                "tokens_per_second_at_most": round(tokens_per_s),
                "peak_memory_mib": summary["peak_memory_mib"],
                **planned,
                **({"measured_gpu_peak_gib": summary["gpu_peak_gib"]}
                   if summary.get("gpu_peak_gib") is not None else {}),
                "wandb_run": summary["wandb_run"] or "disabled",
                "loss_curve": loss_curve(history, f"{name}: training loss"),
                **reward_metadata(history, f"{name}: reward per step"),
                "axolotl_yaml": dg.MetadataValue.md(f"```yaml\n{yaml_text}```"),
                "packages": summary["packages"],
            }
        card = write_card(store, config, name, spec, Registry(store).read(name))
        return dg.MaterializeResult(
            metadata={**meta, "version": version, "reused": not meta, **lineage,
                      "model_card": dg.MetadataValue.md(card),
                      "location": store_link(store, ref["prefix"]),
                      "seconds": round(time.monotonic() - started, 1)},
            data_version=dg.DataVersion(version),
        )

    return [_adapter, peft_format_check(name, spec, _adapter)]


def starting_point(store: ObjectStore, name: str, start: str | None
                   ) -> dict[str, Any] | None:
    """The champion a GRPO adapter starts from (its promotion entry: version, prefix)."""
    if start is None:
        return None
    champion = Registry(store).champion(start)
    if champion is None:
        raise dg.Failure(f"adapters.{name}.grpo.start_from: '{start}' has no champion yet: its "
                         "evaluation's gate has promoted no version; promote one, or drop "
                         "start_from to start from the base model")
    return champion


def memory_recipe(spec: AdapterSpec) -> Recipe:
    t = spec.training
    return Recipe(method=spec.method, sequence_len=t.sequence_len,
                  micro_batch_size=t.micro_batch_size,
                  gradient_accumulation_steps=t.gradient_accumulation_steps, lora_r=spec.lora.r,
                  target_modules=tuple(spec.lora.target_modules or ()) or None,
                  packing=t.packing, gradient_checkpointing=t.gradient_checkpointing,
                  liger=t.liger, distributed=t.distributed, generation=spec.objective == "grpo")


def generation_share(spec: AdapterSpec, config: FactoryConfig, base_dir: Path) -> float | None:
    """The card's share colocated vLLM reserves for a GRPO run's sampling, sized by the memory
    estimate (None: not GRPO on a known GPU; the rendered recipe then keeps TRL's default)."""
    box = config.compute.gpu_box
    if spec.objective != "grpo" or config.compute.device != "gpu" or box is None:
        return None
    shape = ModelShape.from_config(base_config(base_dir))
    return estimate(shape, memory_recipe(spec), box).generation_share


def planned_memory(context: dg.AssetExecutionContext, name: str, spec: AdapterSpec,
                   config: FactoryConfig, base_dir: Path) -> dict[str, object]:
    """A GPU run's memory and step-time estimate (metadata), or a failure with the numbers and
    what to change when it cannot fit, before any machine starts; nothing on a CPU."""
    if config.compute.device != "gpu":
        return {}
    box = config.compute.gpu_box
    if box is None:
        context.log.warning(f"adapter {name}: compute names no GPU (compute.gpu), so its memory "
                            "was not checked before launch")
        return {"memory_estimate": "not checked: set compute.gpu"}
    shape = ModelShape.from_config(base_config(base_dir))
    try:
        found = check_fits(f"adapters.{name}", shape, memory_recipe(spec), box)
    except DoesNotFit as exc:
        raise dg.Failure(str(exc)) from exc
    context.log.info(f"adapter {name}: about {found.total_gib:.1f} GiB per GPU on {box}")
    table = "\n".join(f"| {k} | {v} |" for k, v in found.rows().items())
    return {"memory_estimate": dg.MetadataValue.md(f"| | on {box} |\n|---|---|\n{table}"),
            "estimated_gpu_gib": round(found.total_gib, 1)}


def fail_on_problems(name: str, spec: AdapterSpec, problems: list[dict[str, str]]) -> None:
    fail_if_axolotl_rejects(f"adapter {name}", problems, lambda key: recipe_key(name, spec, key))


def peft_format_check(name: str, spec: AdapterSpec, asset: dg.AssetsDefinition
                      ) -> dg.AssetChecksDefinition:
    """Whatever `adapter/<name>` points at (a training result or a sweep's winner) must be
    servable: PEFT LoRA without trained embeddings, or a complete model for a full fine-tune."""

    @dg.asset_check(name="peft_format", asset=asset, blocking=True,
                    description="The adapter is in PEFT format and servable by vLLM multi-LoRA "
                                "(a full fine-tune: a complete model folder).",
                    automation_condition=WITH_ITS_ASSET)
    def _peft_format(store: ObjectStore) -> dg.AssetCheckResult:
        root = store.local_dir(current(store, "adapter", name)["prefix"])
        if spec.method == "full":
            missing = [f for f in ("config.json", "model.safetensors")
                       if not Path(root, f).is_file()]
            return dg.AssetCheckResult(passed=not missing, metadata={"missing": missing})
        cfg = json.loads(Path(root, "adapter_config.json").read_text())
        problems = []
        if not Path(root, "adapter_model.safetensors").is_file():
            problems.append("adapter_model.safetensors missing")
        if cfg.get("modules_to_save"):
            problems.append(f"modules_to_save={cfg['modules_to_save']} cannot be multi-LoRA served")
        if cfg.get("peft_type") != "LORA":
            problems.append(f"peft_type is {cfg.get('peft_type')}, not LORA")
        return dg.AssetCheckResult(passed=not problems, metadata={
            "problems": problems, "r": cfg.get("r"),
            "target_modules": str(cfg.get("target_modules")),
        })

    return _peft_format
