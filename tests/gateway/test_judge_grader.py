"""GRPO's judge grader (issue #45) asks a model the gateway serves, as any application would:
through the tenant's key, its grants and its audit rows. What the judge says is what the reward
becomes (a strictly parsed grade over 10, or a counted zero); a key without the model's grant
gets the gateway's 404, which is a counted zero too, never a crash of the training run."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.gateway.test_gateway import audit_rows
from tests.support.gateway_fixtures import RunningGateway
from worker import rewards
from worker.judging import GRADE, Unparsable, ask, grade_of

PROMPT = [{"role": "user", "content": "Ava has 3 pens and gets 4 more. How many now?"}]


def judge(gw: RunningGateway) -> dict[str, object]:
    return {"type": "score_model", "model": "tiny", "base_url": f"{gw.url}/v1",
            "api_key_env": "FACTORY_JUDGE_TEST", "rubric": "Grade the arithmetic.", "weight": 1.0}


def rewarded(grader: dict[str, object], reply: str) -> tuple[list[float], dict[str, float]]:
    logged: dict[str, float] = {}
    scores = rewards.grader_0(prompts=[PROMPT], completions=[[{"role": "assistant",
                                                               "content": reply}]],
                              graders=[json.dumps([grader])], reference=["#### 7"],
                              log_metric=logged.__setitem__)
    return scores, logged


def test_a_judge_through_the_gateway_scores_what_it_said_and_is_audited(
        gateway_server: RunningGateway, monkeypatch: pytest.MonkeyPatch) -> None:
    grader = judge(gateway_server)
    monkeypatch.setenv("FACTORY_JUDGE_TEST", gateway_server.key)
    before = len(audit_rows(gateway_server, route="chat.completions", model="tiny"))
    scores, logged = rewarded(grader, "3 + 4 = 7\n#### 7")
    # the same question, asked directly: the reward is its grade, or a counted zero
    with httpx.Client(timeout=120) as client:
        said = ask(client, f"{gateway_server.url}/v1", "tiny", gateway_server.key, GRADE.format(
            rubric="Grade the arithmetic.", question=PROMPT[0]["content"], target="#### 7",
            output="3 + 4 = 7\n#### 7"))
    try:
        expected = ([grade_of(said) / 10], {"grader_failed/grader_0": 0.0})
    except Unparsable:
        expected = ([0.0], {"grader_failed/grader_0": 1.0})
    assert (scores, logged) == expected, said
    rows = audit_rows(gateway_server, route="chat.completions", model="tiny")
    ours = gateway_server.gateway.tenancy.project_id(gateway_server.project)
    assert len(rows) == before + 2 and rows[-2].project_id == ours and rows[-2].status == 200


def test_a_judge_asked_with_a_key_not_granted_the_model_scores_counted_zeros(
        gateway_server: RunningGateway, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACTORY_JUDGE_TEST", gateway_server.other_key)
    assert rewarded(judge(gateway_server), "#### 7") == ([0.0], {"grader_failed/grader_0": 1.0})
    row = audit_rows(gateway_server, route="chat.completions")[-1]
    theirs = gateway_server.gateway.tenancy.project_id(gateway_server.other_project)
    assert row.project_id == theirs and row.status == 404
