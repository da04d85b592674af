"""Splits are deterministic, leak-free and stable; the demo generator's answers are right."""

from assets.curation import dedupe, formats
from assets.curation.pipeline import curate
from assets.curation.splits import SPLITS, assign
from assets.demo_data import math_problems
from assets.ingest.sources import RawRecord
from config.schema import DatasetSpec


def spec(**split: object) -> DatasetSpec:
    return DatasetSpec.model_validate({
        "sources": [{"generator": "math_word_problems", "rows": 600, "seed": 3}],
        "dedupe": {"near": False},
        "split": {"val": 0.1, "test": 0.1, "seed": 5, **split},
    })


def records(rows: list[dict]) -> list[RawRecord]:
    return [RawRecord("gen", i + 1, r) for i, r in enumerate(rows)]


def prompts(split_rows: list[dict]) -> set[str]:
    return {dedupe.exact_key(formats.prompt_text(r)) for r in split_rows}


def test_same_prompt_with_different_answers_never_crosses_splits() -> None:
    rows = list(math_problems.generate(600, 3))
    variants = [{**r, "messages": [*r["messages"][:-1],
                                   {"role": "assistant", "content": "another answer"}]}
                for r in rows[:100]]
    curated = curate(records(rows + variants), spec(), None, None)
    sets = {s: prompts(curated.splits[s]) for s in SPLITS}
    assert not sets["train"] & sets["test"] and not sets["train"] & sets["val"]
    assert not sets["val"] & sets["test"]
    assert all(curated.splits[s] for s in SPLITS)


def test_split_is_deterministic_and_stable_when_rows_are_added() -> None:
    rows = list(math_problems.generate(600, 3))
    a = curate(records(rows), spec(), None, None).splits
    b = curate(records(rows + list(math_problems.generate(50, 99))), spec(), None, None).splits
    assert prompts(a["test"]) <= prompts(b["test"])  # old test rows stay in test
    c = curate(records(rows), spec(seed=6), None, None).splits
    assert prompts(c["test"]) != prompts(a["test"])
    assert curate(records(rows), spec(), None, None).splits == a


def test_stratified_assignment_keeps_proportions_per_stratum() -> None:
    keys = [f"k{i}" for i in range(100)]
    strata = ["a"] * 80 + ["b"] * 20
    out = assign(keys, val=0.1, test=0.2, seed=1, strata=strata)
    assert sum(1 for s, g in zip(out, strata, strict=True) if s == "test" and g == "a") == 16
    assert sum(1 for s, g in zip(out, strata, strict=True) if s == "test" and g == "b") == 4
    assert sum(1 for s, g in zip(out, strata, strict=True) if s == "val" and g == "b") == 2


def test_answers_are_consistent_with_reasoning() -> None:
    for row in math_problems.generate(200, 11):
        answer = row["messages"][-1]["content"].rsplit("#### ", 1)[1]
        assert answer == row["answer"]
        assert f"= {answer}." in row["messages"][-1]["content"]


def test_curated_preference_rows_are_valid_preference_rows() -> None:
    """The schema check re-validates curated rows: the normal form must round-trip."""
    from assets.curation import formats

    curated = formats.normalise({"prompt": "2 + 2?", "chosen": "4", "rejected": "5"},
                                "preference", "auto")
    assert not isinstance(curated, formats.Invalid)
    assert formats.normalise(curated, "preference", "auto") == curated
