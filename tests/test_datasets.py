"""Dataset curation: deterministic splits, no prompt in two splits, stable content version."""

from assets.datasets import SPLITS, _normalised_prompt, curate
from assets.demo_data import math_problems
from pipelines.config import DatasetSpec


def spec(**split: object) -> DatasetSpec:
    return DatasetSpec.model_validate({
        "source": {"generator": "math_word_problems", "rows": 600, "seed": 3},
        "split": {"val": 0.1, "test": 0.1, "seed": 5, **split},
    })


def test_duplicates_removed_before_split_and_splits_disjoint() -> None:
    rows = list(math_problems.generate(600, 3))
    rows += rows[:50]  # exact duplicates must not land in two splits
    splits, duplicates = curate(rows, spec())
    assert duplicates >= 50
    prompts = {s: {_normalised_prompt(r) for r in splits[s]} for s in SPLITS}
    assert not prompts["train"] & prompts["test"]
    assert not prompts["train"] & prompts["val"]
    assert sum(len(v) for v in splits.values()) == len(rows) - duplicates
    assert all(splits[s] for s in SPLITS)


def test_split_is_deterministic_and_stable_when_rows_are_added() -> None:
    rows = list(math_problems.generate(600, 3))
    a, _ = curate(rows, spec())
    b, _ = curate(rows + list(math_problems.generate(50, 99)), spec())
    test_a = {_normalised_prompt(r) for r in a["test"]}
    test_b = {_normalised_prompt(r) for r in b["test"]}
    assert test_a <= test_b  # old test rows stay in test
    c, _ = curate(rows, spec(seed=6))
    assert {_normalised_prompt(r) for r in c["test"]} != test_a


def test_answers_are_consistent_with_reasoning() -> None:
    for row in math_problems.generate(200, 11):
        answer = row["messages"][-1]["content"].rsplit("#### ", 1)[1]
        assert answer == row["answer"]
        assert f"= {answer}." in row["messages"][-1]["content"]
