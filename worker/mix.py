"""Build a weighted mixture of LoRA adapters as one LoRA (PEFT `add_weighted_adapter`).

The result is an ordinary adapter folder, so vLLM serves the mixture like any other adapter;
`cat` keeps the weighted sum of the deltas exact (its rank is the sum of the ranks).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from worker.pipes import open_pipes


def main() -> None:
    with open_pipes() as pipes:
        import torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM

        params = pipes.extras
        out = Path(params["output_dir"])
        shutil.rmtree(out, ignore_errors=True)
        names, paths, weights = zip(*params["adapters"], strict=True)
        model = AutoModelForCausalLM.from_pretrained(params["base_model_dir"],
                                                     dtype=torch.float32)
        model = PeftModel.from_pretrained(model, paths[0], adapter_name=names[0])
        for name, path in zip(names[1:], paths[1:], strict=True):
            model.load_adapter(path, adapter_name=name)
        model.add_weighted_adapter(list(names), list(weights), adapter_name="mixture",
                                   combination_type=params["combination"])
        model.save_pretrained(out / "saved", selected_adapters=["mixture"])
        saved = out / "saved" / "mixture"
        final = out / "final"
        final.mkdir(parents=True)
        for file in saved.iterdir():
            shutil.copy2(file, final / file.name)
        config = json.loads((final / "adapter_config.json").read_text())
        pipes.log.info(f"mixture of {list(names)} with weights {list(weights)}: rank "
                       f"{config['r']}, {params['combination']}")
        pipes.report_custom_message({"r": config["r"]})


if __name__ == "__main__":
    main()
