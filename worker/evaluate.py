"""Score the base model and the adapter on a held-out split with lm-evaluation-harness.

Tasks are generated from the dataset's test split, so the harness does the generation,
filtering and scoring, and we keep its per-sample outputs for reviewers:
- exact match (generate_until, answer extracted after `####`), always;
- multiple choice (loglikelihood): the reference reply among replies to other test questions;
- generation: the whole reply scored against the reference with ROUGE-L and corpus BLEU.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

from worker.pipes import open_pipes

TASK = "factory_exact_match"
MC_TASK = "factory_multiple_choice"
GEN_TASK = "factory_generation"
ANSWER = re.compile(r"#### (\-?[0-9]+)")  # the reference answer, as the filter extracts it


def task_rows(test_rows: list[dict[str, Any]], choices: int, seed: int = 0
              ) -> list[dict[str, Any]]:
    """Question, extracted answer, full reference reply, and multiple-choice options: the
    reference among replies to other questions (seeded), with the index of the right one."""
    import random

    rng = random.Random(seed)
    replies = [row["messages"][-1]["content"].strip() for row in test_rows]
    out = []
    for i, row in enumerate(test_rows):
        user = next(m["content"] for m in row["messages"] if m["role"] == "user")
        answer = ANSWER.search(replies[i])
        others = sorted({r for j, r in enumerate(replies) if j != i and r != replies[i]})
        options = [replies[i], *rng.sample(others, min(choices - 1, len(others)))]
        rng.shuffle(options)
        out.append({"question": user, "reference": replies[i],
                    "answer": answer.group(1) if answer else replies[i],
                    "choices": options, "gold": options.index(replies[i])})
    return out


def write_tasks(task_dir: Path, test_rows: list[dict[str, Any]], max_new_tokens: int,
                local_tasks: list[str], choices: int) -> list[str]:
    """Write the test rows and the harness YAML of each local task; returns the task names."""
    import shutil

    import yaml

    task_dir.mkdir(parents=True, exist_ok=True)
    with (task_dir / "test.jsonl").open("w") as f:
        for row in task_rows(test_rows, choices):
            f.write(json.dumps(row) + "\n")
    common = {"dataset_path": "json",
              "dataset_kwargs": {"data_files": {"test": str(task_dir / "test.jsonl")}},
              "test_split": "test", "doc_to_text": "{{question}}"}
    generation = {"until": ["<|end|>"], "max_gen_toks": max_new_tokens, "do_sample": False}
    tasks = {TASK: {
        **common, "output_type": "generate_until", "doc_to_target": "{{answer}}",
        "generation_kwargs": generation,
        "filter_list": [{"name": "extract", "filter": [
            {"function": "regex", "regex_pattern": ANSWER.pattern},
            {"function": "take_first"},
        ]}],
        "metric_list": [{"metric": "exact_match", "aggregation": "mean",
                         "higher_is_better": True}],
    }}
    if "multiple_choice" in local_tasks:
        tasks[MC_TASK] = {
            **common, "output_type": "multiple_choice", "doc_to_choice": "{{choices}}",
            "doc_to_target": "{{gold}}",
            "metric_list": [{"metric": m, "aggregation": "mean", "higher_is_better": True}
                            for m in ("acc", "acc_norm")]}
    extra = {}
    if "generation" in local_tasks:
        shutil.copy(Path(__file__).with_name("harness_metrics.py"), task_dir / "factory_utils.py")
        tasks[GEN_TASK] = {
            **common, "output_type": "generate_until", "doc_to_target": "{{reference}}",
            "generation_kwargs": generation,
            "metric_list": [{"metric": "rougeL", "aggregation": "mean", "higher_is_better": True},
                            {"metric": "bleu", "aggregation": "bleu", "higher_is_better": True}]}
        extra[GEN_TASK] = "process_results: !function factory_utils.generation_scores\n"
    for name, task in tasks.items():
        text = yaml.safe_dump({"task": name, **task}, sort_keys=False) + extra.get(name, "")
        (task_dir / f"{name}.yaml").write_text(text)
    return list(tasks)


def run_harness(model_args: dict[str, Any], params: dict[str, Any], task_dir: Path,
                local: list[str]) -> dict[str, Any]:
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    started = time.monotonic()
    out = simple_evaluate(
        model="hf",
        model_args=model_args,
        tasks=[*local, *params.get("harness_tasks", [])],
        task_manager=TaskManager(include_path=str(task_dir)),
        batch_size=params["batch_size"],
        device="cpu",
        limit=params["limit"],
        apply_chat_template=True,
        system_instruction=params["system_prompt"],
        log_samples=True,
    )
    seconds = time.monotonic() - started
    metrics = out["results"][TASK]
    samples = [
        {
            "question": s["doc"]["question"],
            "target": s["target"],
            "output": s["resps"][0][0],
            "extracted": s["filtered_resps"][0],
            "correct": bool(s["exact_match"]),
        }
        for s in out["samples"][TASK]
    ]
    others = {task: {k: v for k, v in m.items() if isinstance(v, int | float)}
              for task, m in out["results"].items() if task not in local}
    result = {
        "harness": others,
        "exact_match": metrics["exact_match,extract"],
        "exact_match_stderr": metrics.get("exact_match_stderr,extract"),
        "samples": samples,
        "seconds": round(seconds, 1),
    }
    if MC_TASK in local:
        mc = out["results"][MC_TASK]
        result |= {"mc_accuracy": mc["acc,none"], "mc_accuracy_norm": mc["acc_norm,none"]}
    if GEN_TASK in local:
        gen = out["results"][GEN_TASK]
        result |= {"rougeL": gen["rougeL,none"], "bleu": gen["bleu,none"]}
        result["generation_samples"] = [
            {"question": s["doc"]["question"], "reference": s["doc"]["reference"],
             "output": s["resps"][0][0], "rougeL": round(s["rougeL"], 4)}
            for s in out["samples"][GEN_TASK]][:50]
    return result


def load_model(model_args: dict[str, Any]) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_args["pretrained"])
    model = AutoModelForCausalLM.from_pretrained(model_args["pretrained"], dtype=torch.float32)
    if model_args.get("peft"):
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, model_args["peft"])
    return tokenizer, model.eval()


def respond(model_args: dict[str, Any], prompts: list[str], max_new_tokens: int) -> list[str]:
    """Greedy answers to single-turn prompts (the safety probe's inputs)."""
    import torch

    tokenizer, model = load_model(model_args)
    outputs = []
    with torch.no_grad():
        for prompt in prompts:
            text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}],
                                                 add_generation_prompt=True, tokenize=False)
            ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
            out = model.generate(input_ids=ids, max_new_tokens=max_new_tokens, do_sample=False)
            outputs.append(tokenizer.decode(out[0][ids.shape[1]:], skip_special_tokens=True))
    return outputs


def perplexity(model_args: dict[str, Any], rows: list[dict[str, Any]]) -> float:
    """exp(mean NLL) of the final assistant turn given the conversation before it."""
    import math

    import torch

    tokenizer, model = load_model(model_args)
    total_nll, total_tokens = 0.0, 0
    with torch.no_grad():
        for row in rows:
            messages = row["messages"]
            prompt = tokenizer.apply_chat_template(messages[:-1], add_generation_prompt=True,
                                                   tokenize=False)
            full = tokenizer.apply_chat_template(messages, tokenize=False)
            prompt_len = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
            ids = tokenizer(full, add_special_tokens=False, return_tensors="pt")["input_ids"]
            labels = ids.clone()
            labels[:, :prompt_len] = -100
            n = int((labels[:, 1:] != -100).sum())
            if n == 0:
                continue
            loss = model(input_ids=ids, labels=labels).loss
            total_nll += float(loss) * n
            total_tokens += n
    return math.exp(total_nll / total_tokens) if total_tokens else float("nan")


def as_chat(row: dict[str, Any]) -> dict[str, Any]:
    """A preference row is scored as the conversation that ends in its chosen reply."""
    if "chosen" in row:
        return {"messages": [*row["messages"], {"role": "assistant", "content": row["chosen"]}]}
    return row


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    with open_pipes() as pipes:
        params = pipes.extras
        out_dir = Path(params["output_dir"])
        rows = [as_chat(json.loads(line))
                for line in Path(params["test_path"]).read_text().splitlines()]
        val = [as_chat(json.loads(line))
               for line in Path(params["val_path"]).read_text().splitlines()]
        val = val[: params["perplexity_rows"]] or rows[: params["perplexity_rows"]]
        local = write_tasks(out_dir / "task", rows, params["max_new_tokens"],
                            params.get("local_tasks", []), params.get("mc_choices", 4))
        results = {}
        for name, model_args in params["models"].items():
            pipes.log.info(f"evaluating {name} on {params['limit'] or len(rows)} test rows")
            result = run_harness({**model_args, "dtype": "float32"}, params, out_dir / "task",
                                 local)
            result["seconds_per_sample"] = round(result["seconds"] / len(result["samples"]), 4)
            result["perplexity"] = perplexity(model_args, val)
            if params.get("safety_prompts"):
                result["safety_responses"] = respond(model_args, params["safety_prompts"],
                                                     params["max_new_tokens"])
            results[name] = result
            pipes.log.info(f"{name}: exact_match={result['exact_match']:.3f} "
                           f"perplexity={result['perplexity']:.3f}")
        (out_dir / "results.json").write_text(json.dumps(results, indent=1))
        pipes.report_custom_message(
            {name: {k: v for k, v in r.items() if k != "samples"} for name, r in results.items()}
        )


if __name__ == "__main__":
    main()
