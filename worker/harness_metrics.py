"""The metrics scored per reply against the test row's reference, one table (`REPLY_METRICS`)
for the offline harness task (this file is copied beside the task YAML as `factory_utils.py`,
where lm-eval's `!function` finds it), the endpoint evaluation (worker/evaluate_endpoint.py) and
the control plane's metric table (config/metrics.py). A new reply metric is a scoring function
and a row here; the harness task, the served evaluation, config validation, the promotion gate
and the reports follow.

Exact match compares the answer `answer_pattern`'s first group extracts (the demo: the integer
after `####`), or without a pattern the whole reply, trimmed and case-folded. Patterns run on RE2
(google-re2), whose matching time is linear in the reply: a tenant's pattern such as `(a+)+$`
cannot stall the shared evaluation on a reply like "aaaa…!" as Python's backtracking `re` would.
RE2 has no lookarounds or backreferences, and its word and digit classes are ASCII. ROUGE-L is
per sample; BLEU is corpus-level, so the harness gets the (reference, prediction) pair to
aggregate.
"""

# no `from __future__ import annotations`: lm-eval executes this file without registering it in
# sys.modules, and a dataclass with string annotations looks its module up there.
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any

import re2

NO_ANSWER = "[no answer]"


@cache
def _rouge() -> Any:
    from rouge_score import rouge_scorer  # the worker environment's (lm-eval's) dependency

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


class PatternError(ValueError):
    """A pattern RE2 does not accept; the message says why."""


@lru_cache(maxsize=128)
def compiled(pattern: str) -> Any:
    """The pattern on RE2, the 128 latest compiled once per process (the gateway validates
    every member's pattern: an unbounded cache would grow with them)."""
    options = re2.Options()
    options.log_errors = False  # the error is raised, not also printed
    try:
        return re2.compile(pattern, options)
    except re2.error as exc:
        reason = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else exc
        raise PatternError(f"not a pattern RE2 (the linear-time engine answers are matched "
                           f"with) accepts: {reason}") from exc


def answer_pattern(pattern: str | None) -> str | None:
    """An answer pattern as evaluations, the Studio and graders take it: RE2 compiles it and a
    group holds the answer (PatternError says which is wrong)."""
    if pattern is not None and compiled(pattern).groups < 1:
        raise PatternError(f"{pattern!r} needs a group around the answer, e.g. '#### (-?\\d+)'")
    return pattern


def extract(pattern: str | None, text: str) -> str:
    """The answer in a reply: the pattern's first group, or the whole reply without one."""
    if not pattern:
        return text.strip()
    match = compiled(pattern).search(text)
    return match.group(1).strip() if match else NO_ANSWER


def exact(pattern: str | None, reference_answer: str, reply: str) -> bool:
    """A reference without an answer is a miss for every model, never a match of two misses."""
    return reference_answer != NO_ANSWER and \
        extract(pattern, reply).casefold() == reference_answer.casefold()


def rouge_l(reference: str, reply: str) -> float:
    return _rouge().score(reference, reply.strip())["rougeL"].fmeasure


def scored_doc(pattern: str | None, reference: str) -> dict[str, str]:
    """What a scoring function reads of a test row (the harness task's row has these fields)."""
    return {"pattern": pattern or "", "reference": reference,
            "answer": extract(pattern, reference)}


@dataclass(frozen=True)
class ReplyMetric:
    label: str  # in reports
    higher_is_better: bool
    score: Callable[[dict[str, Any], str], Any]  # (test row, reply) -> this reply's value
    aggregation: str = "mean"  # lm-eval's; "mean" ones are also scored through the endpoint

    @property
    def served(self) -> bool:
        return self.aggregation == "mean"


REPLY_METRICS: dict[str, ReplyMetric] = {
    "exact_match": ReplyMetric(
        "exact match", True,
        lambda doc, reply: float(exact(doc["pattern"], doc["answer"], reply))),
    "rougeL": ReplyMetric("ROUGE-L", True, lambda doc, reply: rouge_l(doc["reference"], reply)),
    "bleu": ReplyMetric("BLEU", True, lambda doc, reply: (doc["reference"], reply.strip()),
                        aggregation="bleu"),
}


def generation_scores(doc: dict[str, Any], results: list[str]) -> dict[str, Any]:
    return {name: metric.score(doc, results[0]) for name, metric in REPLY_METRICS.items()}
