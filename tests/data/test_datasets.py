"""Splits are deterministic, leak-free and stable; the demo generator's answers are right."""

from config.datasets import DatasetSpec
from curation import dedupe, formats
from curation.pipeline import curate
from curation.splits import SPLITS, assign
from ingest.demo_data import math_problems
from ingest.sources import RawRecord


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
    from curation import formats

    curated = formats.normalise({"prompt": "2 + 2?", "chosen": "4", "rejected": "5"},
                                "preference", "auto")
    assert not isinstance(curated, formats.Invalid)
    assert formats.normalise(curated, "preference", "auto") == curated


def test_rated_replies_normalise_in_both_layouts_and_round_trip() -> None:
    """KTO's data: TRL's prompt/completion/label rows, or a rated conversation, as one form."""
    trl = formats.normalise({"prompt": "2 + 2?", "completion": "4", "label": "good"},
                            "feedback", "auto")
    chat = formats.normalise({"messages": [{"role": "user", "content": "2 + 2?"},
                                           {"role": "assistant", "content": "4"}], "label": 1},
                             "feedback", "auto")
    assert trl == chat == {"messages": [{"role": "user", "content": "2 + 2?"}],
                           "completion": "4", "label": True}
    assert formats.normalise(trl, "feedback", "auto") == trl
    assert formats.example_text(trl).endswith("\n4")


def test_a_reply_without_a_readable_label_is_quarantined_with_the_fix() -> None:
    for label in (None, "maybe", 2):
        bad = formats.normalise({"prompt": "q", "completion": "a", "label": label}, "feedback")
        assert isinstance(bad, formats.Invalid) and bad.field == "label", label
        assert "true/false" in bad.fix
    unrated = formats.normalise({"messages": [{"role": "user", "content": "q"}], "label": True},
                                "feedback")
    assert isinstance(unrated, formats.Invalid) and unrated.reason == "no_assistant_turn"


def test_kto_reads_rated_replies_as_they_are_and_pairs_as_one_of_each(tmp_path) -> None:
    import json

    from config.objectives import OBJECTIVES
    from worker.chat import scored_rows

    class Chat:
        turn_end = "<|end|>"

        def render(self, history: list[dict[str, str]]) -> str:
            return "".join(f"<|{m['role']}|>{m['content']}" for m in history) + "<|assistant|>"

    rated = {"messages": [{"role": "user", "content": "q"}], "completion": "bad", "label": False}
    pair = {"messages": [{"role": "user", "content": "q"}], "chosen": "a", "rejected": "b"}
    reshape = OBJECTIVES["kto"].reshape
    assert reshape is not None and OBJECTIVES["kto"].data == ("feedback", "preference")
    assert reshape(rated, Chat()) == [{"prompt": "<|user|>q<|assistant|>",
                                       "completion": "bad<|end|>", "label": False}]
    assert [r["label"] for r in reshape(pair, Chat())] == [True, False]
    # evaluation scores against good replies only: a reply rated bad is no reference
    split = tmp_path / "test.jsonl"
    good = {**rated, "completion": "good", "label": True}
    split.write_text("\n".join(json.dumps(r) for r in (rated, good, pair)) + "\n")
    assert [r["messages"][-1]["content"] for r in scored_rows(split)] == ["good", "a"]
