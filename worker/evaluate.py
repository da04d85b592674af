"""Score the base model and the adapter on a held-out split with lm-evaluation-harness.

Tasks are generated from the dataset's test split, so the harness does the generation and
scoring, and we keep its per-sample outputs for reviewers. A prompt is the row's own
conversation up to its last assistant turn (system turn and earlier turns kept), rendered with
the model's chat template; generation stops where the template ends an assistant turn.
- generation (generate_until), always: exact match (worker/harness_metrics.py: the answer
  `answer_pattern` extracts, or the whole reply), ROUGE-L and corpus BLEU against the reference;
- multiple choice (loglikelihood), optional: the reference among replies to other test rows.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from worker.chat import conversation, question_of, scored_rows, turn_end
from worker.harness_metrics import NO_ANSWER, REPLY_METRICS, extract, rouge_l, scored_doc
from worker.pipes import open_pipes

TASK = "factory_generation"
MC_TASK = "factory_multiple_choice"


def task_rows(test_rows: list[dict[str, Any]], choices: int, pattern: str | None,
              render: Callable[[list[dict[str, str]]], str], seed: int = 0
              ) -> list[dict[str, Any]]:
    """Prompt, question (the last user turn, for reports), reference reply, its answer, and
    multiple-choice options: the reference among replies to other rows (seeded)."""
    import random

    rng = random.Random(seed)
    split = [conversation(row) for row in test_rows]
    replies = [reply for _, reply in split]
    out = []
    for i, (history, reply) in enumerate(split):
        others = sorted({r for j, r in enumerate(replies) if j != i and r != reply})
        options = [reply, *rng.sample(others, min(choices - 1, len(others)))]
        rng.shuffle(options)
        out.append({"prompt": render(history), "question": question_of(history),
                    **scored_doc(pattern, reply), "choices": options,
                    "gold": options.index(reply)})
    return out


def check_references(rows: list[dict[str, Any]], pattern: str | None, log: Any) -> None:
    """A pattern that finds no answer in the references would score every model 0."""
    missing = [r for r in rows if r["answer"] == NO_ANSWER]
    if pattern and len(missing) == len(rows):
        raise ValueError(f"answer_pattern {pattern!r} finds no answer in any reference reply of "
                         f"the test split (e.g. {rows[0]['reference'][:200]!r}); fix the pattern "
                         "or remove it to compare whole replies")
    if missing:
        log.warning(f"{len(missing)} of {len(rows)} reference replies have no answer for "
                    f"answer_pattern {pattern!r}; those rows count as misses for every model")


def write_tasks(task_dir: Path, rows: list[dict[str, Any]], stops: list[str],
                max_new_tokens: int, local_tasks: list[str]) -> list[str]:
    """Write the task rows and the harness YAML of each local task; returns the task names."""
    import shutil

    import yaml

    task_dir.mkdir(parents=True, exist_ok=True)
    with (task_dir / "test.jsonl").open("w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    shutil.copy(Path(__file__).with_name("harness_metrics.py"), task_dir / "factory_utils.py")
    common = {"dataset_path": "json",
              "dataset_kwargs": {"data_files": {"test": str(task_dir / "test.jsonl")}},
              "test_split": "test", "doc_to_text": "{{prompt}}", "target_delimiter": ""}
    tasks = {TASK: {
        **common, "output_type": "generate_until", "doc_to_target": "{{reference}}",
        "generation_kwargs": {"until": stops, "max_gen_toks": max_new_tokens,
                              "do_sample": False},
        "metric_list": [{"metric": name, "aggregation": metric.aggregation,
                         "higher_is_better": metric.higher_is_better}
                        for name, metric in REPLY_METRICS.items()],
    }}
    if "multiple_choice" in local_tasks:
        tasks[MC_TASK] = {
            **common, "output_type": "multiple_choice", "doc_to_choice": "{{choices}}",
            "doc_to_target": "{{gold}}",
            "metric_list": [{"metric": m, "aggregation": "mean", "higher_is_better": True}
                            for m in ("acc", "acc_norm")]}
    extra = {TASK: "process_results: !function factory_utils.generation_scores\n"}
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
        log_samples=True,
    )
    seconds = time.monotonic() - started
    metrics = out["results"][TASK]
    pattern = params.get("answer_pattern")
    samples = [
        {
            "question": s["doc"]["question"],
            "target": s["doc"]["answer"],
            "output": s["resps"][0][0],
            "extracted": extract(pattern, s["resps"][0][0]),
            "correct": bool(s["exact_match"]),
            "rougeL": round(rouge_l(s["doc"]["reference"], s["resps"][0][0]), 4),
        }
        for s in out["samples"][TASK]
    ]
    others = {task: {k: v for k, v in m.items() if isinstance(v, int | float)}
              for task, m in out["results"].items() if task not in local}
    result = {
        "harness": others,
        **{name: metrics[f"{name},none"] for name in REPLY_METRICS},
        "exact_match_stderr": metrics.get("exact_match_stderr,none"),
        "samples": samples,
        "seconds": round(seconds, 1),
    }
    if MC_TASK in local:
        mc = out["results"][MC_TASK]
        result |= {"mc_accuracy": mc["acc,none"], "mc_accuracy_norm": mc["acc_norm,none"]}
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


def reply_nll(tokenizer: Any, model: Any, rows: list[dict[str, Any]]) -> tuple[float, int]:
    """Summed NLL of each row's final assistant turn given the conversation before it, and the
    number of tokens it covers."""
    import torch

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
    return total_nll, total_tokens


def perplexity(model_args: dict[str, Any], rows: list[dict[str, Any]]) -> float:
    """exp(mean NLL) of the final assistant turn given the conversation before it."""
    import math

    tokenizer, model = load_model(model_args)
    total_nll, total_tokens = reply_nll(tokenizer, model, rows)
    return math.exp(total_nll / total_tokens) if total_tokens else float("nan")


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    from transformers import AutoTokenizer

    with open_pipes() as pipes:
        params = pipes.extras
        out_dir = Path(params["output_dir"])
        rows = scored_rows(Path(params["test_path"]))
        val = scored_rows(Path(params["val_path"]))
        val = val[: params["perplexity_rows"]] or rows[: params["perplexity_rows"]]
        # the base model's chat template renders every prompt (adapters are trained under it)
        tokenizer = AutoTokenizer.from_pretrained(params["models"]["base"]["pretrained"])
        pattern = params.get("answer_pattern")
        rows_for_tasks = task_rows(rows, params.get("mc_choices", 4), pattern, lambda history: (
            tokenizer.apply_chat_template(history, add_generation_prompt=True, tokenize=False)))
        check_references(rows_for_tasks[: params["limit"] or None], pattern, pipes.log)
        local = write_tasks(out_dir / "task", rows_for_tasks, turn_end(tokenizer),
                            params["max_new_tokens"], params.get("local_tasks", []))
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
                           f"rougeL={result['rougeL']:.3f} "
                           f"perplexity={result['perplexity']:.3f}")
        (out_dir / "results.json").write_text(json.dumps(results, indent=1))
        pipes.report_custom_message(
            {name: {k: v for k, v in r.items() if k != "samples"} for name, r in results.items()}
        )


if __name__ == "__main__":
    main()
