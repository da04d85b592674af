"""The reward functions TRL's GRPOTrainer calls, named in the rendered Axolotl YAML by dotted
path (`trl.reward_funcs: [worker.rewards.grader_0, ...]`): one per declared grader, by position.
Each reads the graders and the reference from the row's own columns (`graders`, `reference`;
training/axolotl_config.py writes them), so a remote training box needs nothing but the data.
Failed gradings are zeros; the share of replies whose grading failed is logged per step as
`grader_failed/grader_<i>`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from worker.graders import Sample, grade

MAX_GRADERS = 8
JUDGED_AT_ONCE = 8  # a step's replies graded concurrently (a slow judge costs one wait, not n)


def reply_text(completion: Any) -> str:
    """A conversational completion is a list of messages; a plain one is the text."""
    return completion[-1]["content"] if isinstance(completion, list) else completion


def question_text(prompt: Any) -> str:
    """A conversational prompt's last user turn; a plain prompt is the text."""
    if isinstance(prompt, list):
        return next((m["content"] for m in reversed(prompt) if m["role"] == "user"), "")
    return prompt


def reward_of(index: int) -> Callable[..., list[float]]:
    def reward(prompts: list[Any], completions: list[Any], graders: list[str],
               reference: list[str], log_metric: Callable[[str, float], None] | None = None,
               **_: Any) -> list[float]:
        samples = [(json.loads(declared)[index], Sample(question_text(prompt), answer,
                                                         reply_text(completion)))
                   for prompt, completion, declared, answer in zip(
                       prompts, completions, graders, reference, strict=True)]
        with ThreadPoolExecutor(JUDGED_AT_ONCE) as pool:  # a judge answers over the network
            graded = list(pool.map(lambda pair: grade(*pair), samples))
        scores = [score for score, _ in graded]
        failed = sum(not ok for _, ok in graded)
        if log_metric is not None:  # a share: TRL averages what is logged within a step
            log_metric(f"grader_failed/grader_{index}", failed / max(1, len(scores)))
        return scores

    reward.__name__ = f"grader_{index}"  # TRL logs rewards/<name>/mean
    return reward


for _index in range(MAX_GRADERS):
    globals()[f"grader_{_index}"] = reward_of(_index)
