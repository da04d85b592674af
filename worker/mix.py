"""Build a weighted mixture of LoRA adapters as one LoRA (PEFT `add_weighted_adapter`).

The result is an ordinary adapter folder, so vLLM serves the mixture like any other adapter;
`cat` keeps the weighted sum of the deltas exact (its rank is the sum of the ranks). With a
weight search, every candidate is built the same way and scored by its loss on the final replies
of each component's val rows (each component's data counts equally); the lowest is kept.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

from worker.chat import scored_rows
from worker.evaluate import reply_nll
from worker.pipes import open_pipes


def val_loss(tokenizer: Any, model: Any, val_sets: list[list[dict[str, Any]]]) -> float:
    """Mean over the component datasets of the per-token loss on their final replies."""
    losses = []
    for rows in val_sets:
        total, tokens = reply_nll(tokenizer, model, rows)
        if tokens:
            losses.append(total / tokens)
    return sum(losses) / len(losses) if losses else math.nan


def main() -> None:
    with open_pipes() as pipes:
        import torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM, AutoTokenizer

        params = pipes.extras
        out = Path(params["output_dir"])
        shutil.rmtree(out, ignore_errors=True)
        names, paths, weights = zip(*params["adapters"], strict=True)
        model = AutoModelForCausalLM.from_pretrained(params["base_model_dir"],
                                                     dtype=torch.float32)
        model = PeftModel.from_pretrained(model, paths[0], adapter_name=names[0])
        for name, path in zip(names[1:], paths[1:], strict=True):
            model.load_adapter(path, adapter_name=name)
        candidates = [list(weights), *[w for w in params.get("search", [])
                                       if list(w) != list(weights)]]
        trials = []
        if params.get("val_paths"):
            tokenizer = AutoTokenizer.from_pretrained(params["base_model_dir"])
            val_sets = [scored_rows(Path(path), params["val_rows"])
                        for path in params["val_paths"]]
            model.eval()
            for i, candidate in enumerate(candidates):
                model.add_weighted_adapter(list(names), candidate, adapter_name=f"trial{i}",
                                           combination_type=params["combination"])
                model.set_adapter(f"trial{i}")
                loss = val_loss(tokenizer, model, val_sets)
                trials.append({"weights": dict(zip(names, candidate, strict=True)),
                               "val_loss": round(loss, 5)})
                pipes.log.info(f"weights {candidate}: val loss {loss:.4f}")
                model.delete_adapter(f"trial{i}")
            best = min(range(len(trials)), key=lambda i: trials[i]["val_loss"])
            chosen = candidates[best]
        else:
            chosen = list(weights)
        model.add_weighted_adapter(list(names), chosen, adapter_name="mixture",
                                   combination_type=params["combination"])
        model.save_pretrained(out / "saved", selected_adapters=["mixture"])
        saved = out / "saved" / "mixture"
        final = out / "final"
        final.mkdir(parents=True)
        for file in saved.iterdir():
            shutil.copy2(file, final / file.name)
        config = json.loads((final / "adapter_config.json").read_text())
        pipes.log.info(f"mixture of {list(names)} with weights {chosen}: rank "
                       f"{config['r']}, {params['combination']}")
        pipes.report_custom_message({"r": config["r"], "trials": trials,
                                     "weights": dict(zip(names, chosen, strict=True))})


if __name__ == "__main__":
    main()
