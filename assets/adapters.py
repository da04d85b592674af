"""LoRA adapters trained with Axolotl in the worker environment, versioned by their inputs.

version = hash(base model version, dataset version, recipe, trainer pin): the same inputs reuse
the stored adapter instead of retraining; any change trains a new version beside the old one.
"""


import json
import shutil
import time
from pathlib import Path

import dagster as dg

from assets.axolotl_config import render_sft
from assets.common import (
    Definition,
    current,
    loss_curve,
    publish,
    reuse_if_complete,
    store_link,
    version_of,
)
from pipelines.config import AdapterSpec, FactoryConfig
from resources.compute import WorkerCompute
from resources.object_store import ObjectStore

TRAINER = "axolotl==0.19.0"


def adapter_asset(name: str, spec: AdapterSpec, config: FactoryConfig) -> list[Definition]:
    @dg.asset(
        key=["adapter", name], group_name="training", kinds={"axolotl", "peft"},
        deps=[dg.AssetKey(["base_model", spec.base_model]), dg.AssetKey(["dataset", spec.dataset])],
        description=f"LoRA adapter '{name}': {spec.base_model} fine-tuned on {spec.dataset}.",
    )
    def _adapter(context: dg.AssetExecutionContext, store: ObjectStore,
                 worker: WorkerCompute) -> dg.MaterializeResult:
        started = time.monotonic()
        base = current(store, "base_model", spec.base_model)
        data = current(store, "dataset", spec.dataset)
        version = version_of(base["version"], data["version"], spec.model_dump(), TRAINER)
        lineage = {"base_model": f"{spec.base_model}@{base['version']}",
                   "dataset": f"{spec.dataset}@{data['version']}", "trainer": TRAINER,
                   "lora_r": spec.lora.r}
        meta: dict[str, object] = {}
        ref = reuse_if_complete(store, "adapter", name, version, **lineage)
        if ref is not None:
            context.log.info(f"adapter {name}@{version} already trained on these inputs; reused")
        else:
            run_dir = config.work_dir / "runs" / "adapter" / name / version
            shutil.rmtree(run_dir, ignore_errors=True)
            yaml_text = render_sft(
                spec,
                base_dir=store.local_dir(base["prefix"]),
                train_path=store.local_dir(data["prefix"]) / "train.jsonl",
                output_dir=run_dir,
                target=worker.target,
            )
            (summary,) = worker.run(context, "train", {
                "output_dir": str(run_dir), "axolotl_yaml": yaml_text, "adapter": True,
            })
            final = run_dir / "final"
            history = json.loads((final / "training_log.json").read_text())
            ref = publish(store, "adapter", name, version, final, **lineage)
            meta = {
                "steps": summary["steps"],
                "first_loss": float(summary["first_loss"] or "nan"),
                "final_loss": float(summary["final_loss"] or "nan"),
                "train_seconds": summary["wall_seconds"],
                "loss_curve": loss_curve(history, f"{name}: training loss"),
                "axolotl_yaml": dg.MetadataValue.md(f"```yaml\n{yaml_text}```"),
            }
        return dg.MaterializeResult(
            metadata={**meta, "version": version, "reused": not meta, **lineage,
                      "location": store_link(store, ref["prefix"]),
                      "seconds": round(time.monotonic() - started, 1)},
            data_version=dg.DataVersion(version),
        )

    @dg.asset_check(name="peft_format", asset=_adapter, blocking=True,
                    description="The adapter is in PEFT format and servable by vLLM multi-LoRA.")
    def _peft_format(store: ObjectStore) -> dg.AssetCheckResult:
        root = store.local_dir(current(store, "adapter", name)["prefix"])
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

    return [_adapter, _peft_format]
