"""Per-sample scoring for the generated `factory_generation` harness task (copied beside the task
YAML as `factory_utils.py`, where lm-eval's `!function` finds it): ROUGE-L per sample, and the
(reference, prediction) pair that the harness's corpus-level `bleu` aggregation (sacrebleu) needs.
"""

from __future__ import annotations

from typing import Any

from rouge_score import rouge_scorer

_ROUGE = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def generation_scores(doc: dict[str, Any], results: list[str]) -> dict[str, Any]:
    prediction = results[0].strip()
    reference = doc["reference"]
    return {"rougeL": _ROUGE.score(reference, prediction)["rougeL"].fmeasure,
            "bleu": (reference, prediction)}
