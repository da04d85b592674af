"""How a sampled reply is scored in reinforcement fine-tuning (issue #45): one table of grader
types. A `metric` grader is a reply metric of the evaluation (worker/harness_metrics.py), the
same function the promotion gate scores with, so the reward and the gate cannot disagree;
`string_check` and `format` are OpenAI's grader shapes on the metrics and the pattern engine that
exist here (RE2: a tenant's pattern matches in linear time). Several graders are OpenAI's
`multi`: their weighted sum is the reward (TRL's reward_weights).

A grader that raises, or scores NaN or None, scores 0 for that reply and is counted: one broken
grader never stops a training run.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from worker.harness_metrics import REPLY_METRICS, compiled, scored_doc


def metric(grader: dict[str, Any], reference: str, reply: str) -> float:
    doc = scored_doc(grader.get("answer_pattern"), reference)
    return float(REPLY_METRICS[grader["metric"]].score(doc, reply))


def string_check(grader: dict[str, Any], reference: str, reply: str) -> float:
    """eq and ne compare the trimmed reply with the reference; like looks for the reference in
    the reply, ilike without case."""
    reply, reference = reply.strip(), reference.strip()
    return float({"eq": lambda: reply == reference, "ne": lambda: reply != reference,
                  "like": lambda: reference in reply,
                  "ilike": lambda: reference.casefold() in reply.casefold(),
                  }[grader["operation"]]())


def format_check(grader: dict[str, Any], reference: str, reply: str) -> float:
    return float(compiled(grader["pattern"]).search(reply) is not None)


GRADERS: dict[str, Callable[[dict[str, Any], str, str], float]] = {
    "metric": metric, "string_check": string_check, "format": format_check}


def grade(grader: dict[str, Any], reference: str, reply: str) -> tuple[float, bool]:
    """(score, graded): a grader that fails scores 0 and `graded` is False."""
    try:
        score = GRADERS[grader["type"]](grader, reference, reply)
    except Exception:  # any grader failure is a counted zero, by contract (issue #45)
        return 0.0, False
    if score is None or not math.isfinite(score):
        return 0.0, False
    return float(score), True
