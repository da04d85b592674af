"""How a model is asked to grade a reply, and how its grade is read: one prompt and one strict
parse for the evaluation's judge (evaluation/judging.py) and GRPO's `score_model` grader
(worker/graders.py), so the reward a judge gives in training is the score it gives at the gate.

A judgement is read strictly: the whole reply must be one integer from 1 to 10 (a trailing full
stop allowed). Anything else is unparsable, counted by the caller and never guessed at: a
model that says "7 out of 10, though 3 steps..." has not answered the question asked.
"""

from __future__ import annotations

import re

import httpx

GRADE = ("{rubric}\nQuestion: {question}\nReference answer: {target}\nCandidate answer: "
         "{output}\nReply with one integer from 1 (wrong) to 10 (fully correct), nothing else.")
GRADED = re.compile(r"\s*(10|[1-9])\s*\.?\s*")


class Unparsable(ValueError):
    """A judge's reply that is not one grade."""


def grade_of(reply: str) -> int:
    """The grade, 1 to 10; Unparsable for anything else."""
    found = GRADED.fullmatch(reply)
    if found is None:
        raise Unparsable(f"not a grade from 1 to 10: {reply[:80]!r}")
    return int(found.group(1))


def ask(client: httpx.Client, base_url: str, model: str, key: str, prompt: str) -> str:
    """One greedy, short chat completion from an OpenAI-compatible endpoint."""
    response = client.post(
        f"{base_url.rstrip('/')}/chat/completions",
        headers={"authorization": f"Bearer {key}"} if key else {},
        json={"model": model, "temperature": 0, "max_tokens": 8,
              "messages": [{"role": "user", "content": prompt}]})
    response.raise_for_status()
    return response.json()["choices"][0]["message"]["content"] or ""
