"""Generated math word problems with chain-of-thought answers (in the spirit of Arithmo).

Small numbers and one or two steps, the reasoning written as the equations only, so a
one-million-parameter model can learn them on a CPU in minutes; the answer always ends with
`#### <number>` so exact match can extract it.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterator

NAMES = ["Ava", "Ben", "Cara", "Dan", "Eli", "Fay", "Gus", "Hana", "Ivan", "Jade", "Kai", "Lena",
         "Milo", "Nora", "Omar", "Pia", "Quinn", "Rosa", "Sam", "Tara", "Uma", "Vic", "Wes", "Zoe"]
ITEMS = ["apples", "books", "coins", "pens", "stamps", "cards", "shells", "marbles", "cookies",
         "stickers", "plums", "rocks"]

EQUATION = re.compile(r"\d+ [-+*] \d+ = \d+")
SYSTEM_PROMPT = "Solve the problem. Think step by step, then give the answer after ####."


def _add(rng: random.Random) -> tuple[str, str, int]:
    n, i = rng.choice(NAMES), rng.choice(ITEMS)
    a, b = rng.randint(1, 20), rng.randint(1, 20)
    q = f"{n} has {a} {i}. {n} gets {b} more {i}. How many {i} does {n} have now?"
    return q, f"{a} + {b} = {a + b}.", a + b


def _sub(rng: random.Random) -> tuple[str, str, int]:
    n, i = rng.choice(NAMES), rng.choice(ITEMS)
    a = rng.randint(5, 30)
    b = rng.randint(1, a - 1)
    q = f"{n} had {a} {i} and gave away {b} of them. How many {i} are left?"
    return q, f"{a} - {b} = {a - b}.", a - b


def _mul(rng: random.Random) -> tuple[str, str, int]:
    n, i = rng.choice(NAMES), rng.choice(ITEMS)
    a, b = rng.randint(2, 9), rng.randint(2, 9)
    q = f"{n} has {a} boxes with {b} {i} in each box. How many {i} does {n} have in total?"
    return q, f"{a} * {b} = {a * b}.", a * b


def _two_step(rng: random.Random) -> tuple[str, str, int]:
    n, i = rng.choice(NAMES), rng.choice(ITEMS)
    a, b = rng.randint(1, 15), rng.randint(1, 15)
    c = rng.randint(1, a + b - 1)
    q = (f"{n} has {a} {i}, buys {b} more, then loses {c}. "
         f"How many {i} does {n} have at the end?")
    cot = f"{a} + {b} = {a + b}. {a + b} - {c} = {a + b - c}."
    return q, cot, a + b - c


TEMPLATES: list[Callable[[random.Random], tuple[str, str, int]]] = [_add, _sub, _mul, _two_step]


def generate(rows: int, seed: int) -> Iterator[dict[str, object]]:
    """Yield OpenAI-style chat rows with the numeric answer kept alongside for scoring."""
    rng = random.Random(seed)
    for _ in range(rows):
        template = rng.choice(TEMPLATES)
        question, reasoning, answer = template(rng)
        yield {
            "messages": [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": question},
                {"role": "assistant", "content": f"{reasoning} #### {answer}"},
            ],
            "answer": str(answer),
            "kind": template.__name__.lstrip("_"),
        }


def narratives(lines: int, seed: int) -> Iterator[str]:
    """The same little worlds as plain prose (no question, no chat, no `####`): pre-training on
    them teaches the base model to track names and numbers in context, which a few-million-
    parameter model cannot pick up from a LoRA alone."""
    rng = random.Random(seed)
    for _ in range(lines):
        template = rng.choice(TEMPLATES)
        question, reasoning, answer = template(rng)
        story = question.rsplit(". ", 1)[0] + "."
        equations = ", ".join(EQUATION.findall(reasoning))
        yield f"{story} {equations}, so the result is {answer}."


def arithmetic_drills(lines: int, seed: int) -> Iterator[str]:
    """Plain arithmetic facts for pre-training the base model: it learns to add, not the format."""
    rng = random.Random(seed)
    for _ in range(lines):
        op = rng.choice("+-*")
        if op == "*":
            a, b = rng.randint(2, 9), rng.randint(2, 9)
            yield f"{a} * {b} = {a * b}"
        elif op == "+":
            a, b = rng.randint(1, 30), rng.randint(1, 30)
            yield f"{a} + {b} = {a + b}"
        else:
            a = rng.randint(2, 40)
            b = rng.randint(1, a - 1)
            yield f"{a} - {b} = {a - b}"
