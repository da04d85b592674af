"""Reinforcement fine-tuning's pieces without training (issue #45): factory.yaml's `grpo` block
and the key each mistake names, the graders' scores (the evaluation's own metric, string checks,
a format check, weights; ROUGE-L scores in the training environment, where its package is),
a failing grader counted as zeros, the rows and the Axolotl YAML
rendered for TRL's GRPOTrainer, validated by Axolotl itself. The real run on SmolLM2 is in
tests/project/test_second_project.py."""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from config.loading import ConfigError, load_config
from config.training import TrackingSpec
from models.cards import grader_label
from training.axolotl_config import render_adapter, reshaped
from worker import rewards
from worker.graders import Sample, blind_graders, grade, judge_keys, keyless_judges
from worker.judging import Unparsable, grade_of

REPO = Path(__file__).resolve().parents[2]
TRAIN_PYTHON = REPO / ".venvs" / "train" / "bin" / "python"
PATTERN = r"#### (-?\d+)"


def project(tmp_path: Path, adapter: dict[str, Any]) -> Any:
    (tmp_path / "factory.yaml").write_text(json.dumps({
        "base_models": {"tiny": {"source": "local"}},
        "datasets": {"math": {"sources": [{"generator": "math_word_problems", "rows": 40}]}},
        "adapters": {"rl": {"base_model": "tiny", "dataset": "math", "objective": "grpo",
                            **adapter}},
        "evaluations": {"rl-eval": {"adapter": "rl", "answer_pattern": PATTERN}}}))
    return load_config(tmp_path / "factory.yaml")


def test_the_evaluations_scorer_is_the_default_grader_and_mistakes_name_their_key(
        tmp_path: Path) -> None:
    config = project(tmp_path, {})
    assert config.graders_of("rl") == [{"type": "metric", "metric": "exact_match",
                                        "answer_pattern": PATTERN, "weight": 1.0}]
    declared = project(tmp_path, {"grpo": {"graders": [
        {"type": "format", "pattern": r"#### -?\d+$", "weight": 0.5},
        {"type": "string_check", "operation": "ilike"}]}})
    assert [g["type"] for g in declared.graders_of("rl")] == ["format", "string_check"]
    judged = project(tmp_path, {"grpo": {"graders": [
        {"type": "score_model", "model": "m", "base_url": "http://judge:8000/v1"},
        {"type": "metric", "metric": "rougeL", "weight": 0.5}]}})
    assert judged.graders_of("rl")[0]["base_url"] == "http://judge:8000/v1"
    assert [grader_label(g) for g in judged.graders_of("rl")] == [  # as the model card says
        "score_model: m grades it 1-10 against the reference", "rougeL"]
    mistakes = [
        ({"grpo": {"num_generations": 3}},  # 8 rows a step cannot split into groups of 3
         r"adapters\.rl\.grpo\.num_generations: 3 replies a prompt must divide a step's 8"),
        ({"grpo": {"graders": [{"type": "format", "pattern": r"(?<=#)\d+"}]}},
         r"adapters\.rl\.grpo\.graders\.0\.format\.pattern: .*RE2"),
        ({"grpo": {"graders": [{"type": "metric", "metric": "bleu"}]}},
         r"adapters\.rl\.grpo\.graders\.0\.metric\.metric"),
        ({"grpo": {"graders": [{"type": "python", "path": "no_such_module.score"}]}},
         r"adapters\.rl\.grpo\.graders\.0\.python\.path: .*no module 'no_such_module'"),
        ({"grpo": {"graders": [{"type": "judge", "model": "x"}]}},
         r"adapters\.rl\.grpo\.graders\.0"),
        ({"grpo": {"graders": [{"type": "score_model", "model": "gpt-judge"}]}},
         r"adapters\.rl\.grpo\.graders\.0\.model: the gateway serves no 'gpt-judge' "
         r"\(served: nothing\)"),
        ({"grpo": {"graders": [{"type": "score_model", "model": "m",  # not a judge's key
                                "api_key_env": "AWS_SECRET_ACCESS_KEY"}]}},
         r"adapters\.rl\.grpo\.graders\.0\.score_model\.api_key_env"),
        ({"objective": "sft", "grpo": {}}, r"adapters\.rl\.grpo: only objective: grpo"),
        ({"grpo": {"start_from": "rl"}}, r"adapters\.rl\.grpo\.start_from: 'rl' is itself "
                                         "trained by reinforcement"),
        ({"grpo": {"start_from": "nobody"}}, r"adapters\.rl\.grpo\.start_from: 'nobody'"),
    ]
    for adapter, message in mistakes:
        with pytest.raises(ConfigError, match=message):
            project(tmp_path, adapter)


def scored(grader: dict[str, Any], reference: str, reply: str) -> tuple[float, bool]:
    return grade(grader, Sample("", reference, reply))


@pytest.fixture
def judge_says(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], dict[str, Any]]]:
    """An OpenAI-compatible judge on a local port that answers what the test sets, and the
    score_model grader asking it (its key in FACTORY_JUDGE_TEST, checked on each request)."""
    said: list[str] = []

    class Judge(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["content-length"]))
            ok = self.headers.get("authorization") == "Bearer judge-key"
            body = json.dumps({"choices": [{"message": {"content": said[-1]}}]} if ok
                              else {"error": {"message": "no such key"}}).encode()
            self.send_response(200 if ok else 401)
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Judge)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("FACTORY_JUDGE_TEST", "judge-key")

    def grader(reply: str) -> dict[str, Any]:
        said.append(reply)
        return {"type": "score_model", "model": "judge", "rubric": "r", "weight": 1.0,
                "base_url": f"http://127.0.0.1:{server.server_port}/v1",
                "api_key_env": "FACTORY_JUDGE_TEST"}

    yield grader
    server.shutdown()


def test_a_judges_grade_is_the_reward_and_anything_else_a_counted_zero(
        judge_says: Callable[[str], dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    assert scored(judge_says("7"), "#### 7", "#### 7") == (0.7, True)
    assert scored(judge_says("10."), "#### 7", "#### 7") == (1.0, True)
    assert scored(judge_says("7 out of 10"), "#### 7", "#### 7") == (0.0, False)
    assert judge_keys([judge_says("7")]) == {"FACTORY_JUDGE_TEST": "judge-key"}
    monkeypatch.setenv("FACTORY_JUDGE_TEST", "wrong")  # the endpoint refuses: a counted zero
    assert scored(judge_says("7"), "#### 7", "#### 7") == (0.0, False)


def test_graders_score_replies_and_a_failing_one_counts_a_zero() -> None:
    exact = {"type": "metric", "metric": "exact_match", "answer_pattern": PATTERN}
    assert scored(exact, "so 12\n#### 12", "12 apples\n#### 12") == (1.0, True)
    assert scored(exact, "#### 12", "#### 13") == (0.0, True)
    assert scored({"type": "string_check", "operation": "ilike"}, "Billing", "billing!")[0] == 1
    assert scored({"type": "format", "pattern": r"#### -?\d+$"}, "", "x\n#### 4") == (1.0, True)
    assert scored({"type": "no-such-grader"}, "a", "a") == (0.0, False)
    # a pattern no reference answers would make every reward 0: the training refuses it
    assert blind_graders([exact, {"type": "format", "pattern": "x"}], ["12", "#### 7"]) == []
    assert blind_graders([exact], ["twelve", "seven"]) == [
        f"graders.0: answer_pattern {PATTERN!r} finds no answer in any of the 2 reference "
        "replies (e.g. 'twelve')"]
    assert scored({"type": "python", "path": "operator.eq"}, "4", "4") == (1.0, True)
    assert scored({"type": "python", "path": "operator.truediv"}, "4", "2") == (0.0, False)
    # a judge's grade is read strictly (the evaluation's judge reads it the same way)
    assert [grade_of(r) for r in ("7", " 10.", "1\n")] == [7, 10, 1]
    for unparsable in ("7 out of 10", "0", "11", "seven", "", "Grade: 7"):
        with pytest.raises(Unparsable):
            grade_of(unparsable)
    judge = {"type": "score_model", "model": "m", "api_key_env": "FACTORY_JUDGE_UNSET",
             "base_url": "http://127.0.0.1:9/v1", "rubric": "r"}
    assert scored(judge, "4", "4") == (0.0, False)  # no key, no endpoint: a counted zero
    assert keyless_judges([exact, judge], {}) == [
        "graders.1: score_model asks 'm' with the key in $FACTORY_JUDGE_UNSET, which is not set "
        "where training runs; set it to a gateway key granted that model"]
    assert keyless_judges([judge], {"FACTORY_JUDGE_UNSET": "k"}) == []

    logged: dict[str, float] = {}
    graders = json.dumps([exact, {"type": "string_check", "operation": "like", "weight": 2},
                          {"type": "format", "pattern": "("}])  # the third cannot compile
    replies = [[{"role": "assistant", "content": "#### 12"}],  # conversational, as TRL gives
               [{"role": "assistant", "content": "twelve"}]]
    columns = {"prompts": [[], []], "completions": replies, "graders": [graders] * 2,
               "reference": ["#### 12", "#### 12"], "log_metric": logged.__setitem__}
    assert rewards.grader_0(**columns) == [1.0, 0.0]
    assert rewards.grader_1(**columns) == [1.0, 0.0]
    assert rewards.grader_2(**columns) == [0.0, 0.0]
    assert logged == {"grader_failed/grader_0": 0, "grader_failed/grader_1": 0,
                      "grader_failed/grader_2": 1}  # the share of replies


@pytest.mark.slow  # imports Axolotl in the training environment
def test_rows_and_the_axolotl_yaml_for_grpo_validate_with_axolotl(tmp_path: Path) -> None:
    config = project(tmp_path, {"grpo": {"graders": [
        {"type": "metric", "metric": "exact_match", "answer_pattern": PATTERN},
        {"type": "format", "pattern": r"#### -?\d+", "weight": 0.25}], "num_generations": 4}})
    graders = config.graders_of("rl")
    train = tmp_path / "train.jsonl"
    train.write_text(json.dumps({"messages": [
        {"role": "system", "content": "Solve it."}, {"role": "user", "content": "2 + 2?"},
        {"role": "assistant", "content": "#### 4"}]}) + "\n")
    base = tmp_path / "base"
    base.mkdir()
    (shaped,) = reshaped("grpo", base, [train], tmp_path / "data",
                         {"graders": json.dumps(graders)})
    row = json.loads(shaped.read_text())
    assert row["prompt"][-1] == {"role": "user", "content": "2 + 2?"}
    assert row["reference"] == "#### 4" and json.loads(row["graders"]) == graders
    files = []
    for target in ("cpu", "gpu"):
        text = render_adapter(config.adapters["rl"], base_dir=base, train_path=shaped,
                              output_dir=tmp_path / "run", tracking=TrackingSpec(),
                              run_name="r", target=target, graders=graders,
                              start_dir=tmp_path / "sft-champion", generation_share=0.15)
        rendered = yaml.safe_load(text)
        assert rendered["rl"] == "grpo"
        assert rendered["trl"]["reward_funcs"] == ["worker.rewards.grader_0",
                                                   "worker.rewards.grader_1"]
        assert rendered["trl"]["reward_weights"] == [1.0, 0.25]
        assert rendered["trl"]["num_generations"] == 4
        assert rendered["lora_model_dir"] == str(tmp_path / "sft-champion")  # SFT, then RL
        # on a GPU, vLLM samples in the training process, on the share the estimate sized
        assert rendered["trl"]["use_vllm"] is (target == "gpu")
        assert rendered["trl"].get("vllm_mode") == ("colocate" if target == "gpu" else None)
        assert rendered.get("vllm") == ({"gpu_memory_utilization": 0.15,
                                         "tensor_parallel_size": 1} if target == "gpu"
                                        else None)
        files.append(tmp_path / f"{target}.yaml")
        files[-1].write_text(text)
    done = subprocess.run([str(TRAIN_PYTHON), "-m", "worker.validate", *map(str, files)],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {str(f): [] for f in files}
