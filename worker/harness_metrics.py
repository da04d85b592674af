"""Per-sample scoring of a generated reply against the test row's reference, one definition for
the offline harness task (copied beside the task YAML as `factory_utils.py`, where lm-eval's
`!function` finds it) and the endpoint evaluation (worker/evaluate_endpoint.py).

Exact match compares the answer `answer_pattern`'s first group extracts (the demo: the integer
after `####`), or without a pattern the whole reply, trimmed and case-folded. ROUGE-L is per
sample; BLEU is corpus-level, so the harness gets the (reference, prediction) pair to aggregate.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

NO_ANSWER = "[no answer]"


@cache
def _rouge() -> Any:
    from rouge_score import rouge_scorer  # the worker environment's (lm-eval's) dependency

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def extract(pattern: str | None, text: str) -> str:
    """The answer in a reply: the pattern's first group, or the whole reply without one."""
    if not pattern:
        return text.strip()
    match = re.search(pattern, text)
    return match.group(1).strip() if match else NO_ANSWER


def exact(pattern: str | None, reference_answer: str, reply: str) -> bool:
    """A reference without an answer is a miss for every model, never a match of two misses."""
    return reference_answer != NO_ANSWER and \
        extract(pattern, reply).casefold() == reference_answer.casefold()


def rouge_l(reference: str, reply: str) -> float:
    return _rouge().score(reference, reply.strip())["rougeL"].fmeasure


def generation_scores(doc: dict[str, Any], results: list[str]) -> dict[str, Any]:
    reply = results[0]
    return {"exact_match": float(exact(doc["pattern"], doc["answer"], reply)),
            "rougeL": rouge_l(doc["reference"], reply),
            "bleu": (doc["reference"], reply.strip())}
