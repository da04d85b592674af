"""How a sampled reply is scored in reinforcement fine-tuning (issue #45): one table of grader
types. A `metric` grader is a reply metric of the evaluation (worker/harness_metrics.py), the
same function the evaluation scores replies with, so the reward and the gate's per-reply metric
cannot disagree;
`string_check` and `format` are OpenAI's grader shapes on the metrics and the pattern engine that
exist here (RE2: a tenant's pattern matches in linear time); `score_model` asks a served model
with the evaluation judge's own prompt and parse (worker/judging.py); `python` is a function of
the platform's own code. Several graders are OpenAI's
`multi`: their weighted sum is the reward (TRL's reward_weights).

A grader that raises, or scores NaN or None, scores 0 for that reply and is counted: one broken
grader never stops a training run.
"""

from __future__ import annotations

import importlib
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from worker.harness_metrics import NO_ANSWER, REPLY_METRICS, compiled, extract, scored_doc
from worker.judging import GRADE, ask, grade_of

JUDGE_TIMEOUT_S = 60


@dataclass(frozen=True)
class Sample:
    """What a grader sees of one sampled reply."""

    question: str  # the prompt's last user turn
    reference: str  # the row's own reply
    reply: str


def metric(grader: dict[str, Any], sample: Sample) -> float:
    doc = scored_doc(grader.get("answer_pattern"), sample.reference)
    return float(REPLY_METRICS[grader["metric"]].score(doc, sample.reply))


def string_check(grader: dict[str, Any], sample: Sample) -> float:
    """eq and ne compare the trimmed reply with the reference; like looks for the reference in
    the reply, ilike without case."""
    reply, reference = sample.reply.strip(), sample.reference.strip()
    return float({"eq": lambda: reply == reference, "ne": lambda: reply != reference,
                  "like": lambda: reference in reply,
                  "ilike": lambda: reference.casefold() in reply.casefold(),
                  }[grader["operation"]]())


def format_check(grader: dict[str, Any], sample: Sample) -> float:
    return float(compiled(grader["pattern"]).search(sample.reply) is not None)


def score_model(grader: dict[str, Any], sample: Sample) -> float:
    """The judge's grade over 10, asked as the evaluation's judge asks (an unparsable reply
    raises, and so counts as a failed grading)."""
    prompt = GRADE.format(rubric=grader["rubric"], question=sample.question,
                          target=sample.reference, output=sample.reply)
    with httpx.Client(timeout=JUDGE_TIMEOUT_S) as client:
        reply = ask(client, grader["base_url"], grader["model"],
                    os.environ[grader["api_key_env"]], prompt)
    return grade_of(reply) / 10


def python(grader: dict[str, Any], sample: Sample) -> float:
    """A function of the platform's own code, `fn(reference, reply) -> float`, by dotted path
    (factory.yaml only: the Studio offers no grader, so a tenant's code never runs here)."""
    module, _, name = grader["path"].rpartition(".")
    return float(getattr(importlib.import_module(module), name)(sample.reference, sample.reply))


GRADERS: dict[str, Callable[[dict[str, Any], Sample], float]] = {
    "metric": metric, "string_check": string_check, "format": format_check,
    "score_model": score_model, "python": python}


def grade(grader: dict[str, Any], sample: Sample) -> tuple[float, bool]:
    """(score, graded): a grader that fails scores 0 and `graded` is False."""
    try:
        score = GRADERS[grader["type"]](grader, sample)
    except Exception:  # any grader failure is a counted zero, by contract (issue #45)
        return 0.0, False
    if score is None or not math.isfinite(score):
        return 0.0, False
    return float(score), True


def judge_keys(graders: list[dict[str, Any]]) -> dict[str, str] | None:
    """The judges' keys from this process's environment, for the training job's (a job gets a
    fixed environment plus its secrets); None without judges."""
    keys = {g["api_key_env"]: os.environ[g["api_key_env"]] for g in graders
            if g["type"] == "score_model" and g["api_key_env"] in os.environ}
    return keys or None


def keyless_judges(graders: list[dict[str, Any]], environ: Mapping[str, str]) -> list[str]:
    """The judges whose key is not set where training runs: each of their gradings would fail,
    so the training refuses to start (each as `graders.<i>: why`)."""
    return [f"graders.{i}: score_model asks {g['model']!r} with the key in ${g['api_key_env']}"
            ", which is not set where training runs; set it to a gateway key granted that "
            "model" for i, g in enumerate(graders)
            if g["type"] == "score_model" and not environ.get(g["api_key_env"])]


def blind_graders(graders: list[dict[str, Any]], references: list[str]) -> list[str]:
    """The graders whose answer pattern finds no answer in any reference: every reply would
    score 0 on them and GRPO would learn nothing (each as `graders.<i>: why`)."""
    return [f"graders.{i}: answer_pattern {g['answer_pattern']!r} finds no answer in any of "
            f"the {len(references)} reference replies (e.g. {references[0][:120]!r})"
            for i, g in enumerate(graders)
            if g["type"] == "metric" and g.get("answer_pattern") and references
            and all(extract(g["answer_pattern"], r) == NO_ANSWER for r in references)]
