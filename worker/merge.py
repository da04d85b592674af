"""Merge a LoRA adapter into its base model's weights (PEFT `merge_and_unload`).

The result is an ordinary model folder (weights, config, the base's tokenizer and chat template),
so vLLM serves it as a plain model under the adapter's name, without the LoRA path's cost per
request. Weights stay float32, the dtype the replicas serve, so greedy outputs match the same
adapter served through LoRA.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from worker.pipes import open_pipes

# written by save_pretrained from the merged model; everything else comes from the base folder
MODEL_FILES = ("config.json", "generation_config.json", "model.safetensors",
               "model.safetensors.index.json")


def merge_into_base(base_dir: Path, adapter_dir: Path, out: Path) -> int:
    """Write base + adapter, merged, to `out`; returns the parameter count."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    merged = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
    merged.save_pretrained(out, safe_serialization=True)
    for file in base_dir.iterdir():  # tokenizer, chat template: the base model's own
        if file.is_file() and file.name not in MODEL_FILES and not file.name.startswith("_"):
            shutil.copy2(file, out / file.name)
    return sum(p.numel() for p in merged.parameters())


def main() -> None:
    with open_pipes() as pipes:
        params = pipes.extras
        out = Path(params["output_dir"])
        count = merge_into_base(Path(params["base_model_dir"]), Path(params["adapter_dir"]), out)
        pipes.log.info(f"merged {params['adapter_dir']} into {params['base_model_dir']}: "
                       f"{count:,} parameters in {out}")
        pipes.report_custom_message({"parameters": count})


if __name__ == "__main__":
    main()
