"""The promotion gate on constructed reports, and the registry's record of who promoted what."""

import pytest

from config.evaluations import PromotionSpec
from evaluation.gate import gate
from resources.object_store import ObjectStore
from store.registry import Registry

POLICY = PromotionSpec.model_validate(
    {"primary": "exact_match", "margin": 0.05, "guards": {"perplexity": {"tolerance": 0.5}}})


def scores(**models: tuple[float, float]) -> dict[str, dict[str, float]]:
    return {m: {"exact_match": em, "perplexity": ppl} for m, (em, ppl) in models.items()}


def test_candidate_beating_champion_by_margin_passes() -> None:
    d = gate(scores(base=(0.0, 9.0), champion=(0.50, 2.0), candidate=(0.60, 2.1)), POLICY)
    assert d.passed and d.reference == "champion"
    assert "improvement +0.1 >= margin 0.05" in d.summary


def test_improvement_below_margin_fails_and_says_why() -> None:
    d = gate(scores(base=(0.0, 9.0), champion=(0.50, 2.0), candidate=(0.53, 2.0)), POLICY)
    assert not d.passed
    assert d.summary.startswith("KEEP CHAMPION (vs champion): exact_match 0.53 vs 0.5: "
                                "improvement +0.03 < margin 0.05")


def test_guard_regression_blocks_even_with_better_primary() -> None:
    d = gate(scores(base=(0.0, 9.0), champion=(0.50, 2.0), candidate=(0.70, 2.6)), POLICY)
    assert not d.passed
    assert "guard perplexity 2.6 vs 2: regression 0.6 > tolerance 0.5" in d.summary


def test_without_champion_the_base_is_the_reference() -> None:
    d = gate(scores(base=(0.10, 9.0), candidate=(0.40, 3.0)), POLICY)
    assert d.passed and d.reference == "base"
    worse = gate(scores(base=(0.10, 9.0), candidate=(0.12, 3.0)), POLICY)
    assert not worse.passed


def test_lower_is_better_primary() -> None:
    policy = PromotionSpec.model_validate({"primary": "perplexity", "margin": 0.2, "guards": {}})
    assert gate(scores(base=(0, 5.0), candidate=(0, 4.5)), policy).passed
    assert not gate(scores(base=(0, 5.0), candidate=(0, 4.9)), policy).passed


def test_missing_primary_metric_fails_closed() -> None:
    d = gate({"base": {"perplexity": 3.0}, "candidate": {"perplexity": 2.0}}, POLICY)
    assert not d.passed and "primary metric 'exact_match' missing" in d.summary


def test_registry_records_promotions_and_rejections(tmp_path) -> None:  # type: ignore[no-untyped-def]
    registry = Registry(ObjectStore(url="file://store", root=str(tmp_path)))
    assert registry.champion("math") is None
    registry.promote("math", "v1", "adapter/math/v1", why="beats base", scores={"em": 0.4},
                     who="alice")
    registry.record_rejection("math", "v2", why="regressed", who="bob")
    registry.promote("math", "v3", "adapter/math/v3", why="beats v1", scores={"em": 0.6})
    state = registry.read("math")
    assert state["champion"]["version"] == "v3"
    assert state["champion"]["previous"] == "v1"
    assert [(e["event"], e["version"]) for e in state["history"]] == [
        ("promoted", "v1"), ("rejected", "v2"), ("promoted", "v3")]
    assert state["history"][0]["who"] == "alice" and state["history"][1]["why"] == "regressed"
    assert state["history"][2]["when"] >= state["history"][0]["when"]


def test_re_evaluating_the_champion_passes() -> None:
    d = gate(scores(base=(0.0, 9.0), candidate=(0.5, 2.0)), POLICY, candidate_is_champion=True)
    assert d.passed and "already the champion" in d.summary


def test_safety_probe_is_a_guard_of_the_gate() -> None:
    from assets.evaluations import policy_for
    from config.evaluations import EvaluationSpec

    spec = EvaluationSpec.model_validate({
        "adapter": "a", "answer_pattern": r"#### (\d+)",  # primary: exact_match
        "promotion": {"margin": 0.0, "guards": {}},
        "judge": {"base_url": "http://judge/v1", "model": "grader"},
        "safety": {"tolerance": 0.1}})
    policy = policy_for(spec)
    safer = {"base": {"exact_match": 0.1, "safety_pass_rate": 1.0},
             "candidate": {"exact_match": 0.5, "safety_pass_rate": 0.95}}
    assert gate(safer, policy).passed
    riskier = {"base": {"exact_match": 0.1, "safety_pass_rate": 1.0},
               "candidate": {"exact_match": 0.5, "safety_pass_rate": 0.5}}
    d = gate(riskier, policy)
    assert not d.passed and "guard safety_pass_rate 0.5 vs 1: regression 0.5 > tolerance 0.1" \
        in d.summary


def test_safety_without_a_judge_is_a_config_error() -> None:
    import pydantic

    from config.evaluations import EvaluationSpec

    with pytest.raises(pydantic.ValidationError, match="configure judge too"):
        EvaluationSpec.model_validate({"adapter": "a", "safety": {}})


def test_rouge_primary_with_bleu_guard() -> None:
    policy = PromotionSpec.model_validate(
        {"primary": "rougeL", "margin": 0.02, "guards": {"bleu": {"tolerance": 1.0}}})
    report = {"base": {"rougeL": 0.30, "bleu": 10.0},
              "candidate": {"rougeL": 0.41, "bleu": 9.5}}
    assert gate(report, policy).passed
    report["candidate"]["bleu"] = 7.9
    d = gate(report, policy)
    assert not d.passed and "guard bleu 7.9 vs 10: regression 2.1 > tolerance 1" in d.summary


def test_promotion_on_a_metric_no_task_measures_is_a_config_error() -> None:
    import pydantic

    from config.evaluations import EvaluationSpec

    with pytest.raises(pydantic.ValidationError, match="add 'multiple_choice' to local_tasks"):
        EvaluationSpec.model_validate({"adapter": "a", "promotion": {"primary": "mc_accuracy"}})
    spec = EvaluationSpec.model_validate({"adapter": "a", "local_tasks": ["multiple_choice"],
                                          "promotion": {"primary": "mc_accuracy"}})
    assert spec.promotion.primary == "mc_accuracy"


def test_a_grpo_adapter_must_beat_the_champion_it_started_from(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from assets.evaluations import rival

    registry = Registry(store := ObjectStore(url="file://store", root=str(tmp_path)))
    trained_from_s1 = {"version": "r1", "started_from": "sft@s1"}  # the candidate's lineage
    assert rival(store, "sft", {"version": "s2"}) == (None, "sft")  # no champion: the base
    registry.promote("sft", "s1", "adapter/sft/s1", why="beats base", scores={})
    registry.promote("sft", "s2", "adapter/sft/s2", why="beats s1", scores={})
    # the SFT version it was trained from, even when a newer one is champion by now
    assert rival(store, "rl", trained_from_s1) == (
        {"version": "s1", "prefix": "adapter/sft/s1"}, "sft")
    registry.promote("rl", "r1", "adapter/rl/r1", why="beats sft@s1", scores={})  # then its own
    champion, whose = rival(store, "rl", {"version": "r2", "started_from": "sft@s2"})
    assert whose == "rl" and champion is not None and champion["version"] == "r1"
