"""The evaluation asks each test row's own conversation and scores replies the way the project's
data says: what a user of a non-math project sees instead of the demo's prompt and `####`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from transformers import PreTrainedTokenizerFast

from config.loading import ConfigError, load_config
from tests.support.recording_api import RecordingServer
from worker.chat import conversation, turn_end
from worker.evaluate import check_references, task_rows, write_tasks
from worker.harness_metrics import NO_ANSWER, PatternError, exact, extract

ROOT = Path(__file__).resolve().parents[2]
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
TICKETS = [
    {"messages": [
        {"role": "system", "content": "You triage support tickets."},
        {"role": "user", "content": "My invoice is wrong."},
        {"role": "assistant", "content": "Which invoice number?"},
        {"role": "user", "content": "INV-42, charged twice."},
        {"role": "assistant", "content": "Category: billing\nPriority: high"}]},
    {"messages": [
        {"role": "system", "content": "You triage support tickets."},
        {"role": "user", "content": "The app crashes on login."},
        {"role": "assistant", "content": "Category: bug\nPriority: high"}]},
]


def chatml_tokenizer() -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(WordLevel({"[UNK]": 0}, unk_token="[UNK]")),
        chat_template=CHATML, eos_token="[UNK]")


def test_the_prompt_is_the_rows_own_conversation_in_the_models_template() -> None:
    tokenizer = chatml_tokenizer()
    rows = task_rows(TICKETS, choices=2, pattern=None, render=lambda history: (
        tokenizer.apply_chat_template(history, add_generation_prompt=True, tokenize=False)))
    first = rows[0]
    # system turn and the earlier exchange kept; the last reply is the reference, not the prompt
    assert first["prompt"].startswith("<|im_start|>system\nYou triage support tickets.")
    assert "Which invoice number?" in first["prompt"] and "INV-42" in first["prompt"]
    assert first["prompt"].endswith("<|im_start|>assistant\n")
    assert "Category: billing" not in first["prompt"]
    assert first["question"] == "INV-42, charged twice."
    assert first["reference"] == first["answer"] == "Category: billing\nPriority: high"
    assert sorted(first["choices"]) == sorted(r["reference"] for r in rows)
    assert turn_end(tokenizer) == ["<|im_end|>"]  # where generation stops


def test_exact_match_follows_the_answer_pattern_or_compares_whole_replies() -> None:
    assert extract(r"#### (-?\d+)", "3 + 4 = 7\n#### 7") == "7"
    assert exact(r"#### (-?\d+)", "7", "so #### 7") and not exact(r"#### (-?\d+)", "7", "#### 8")
    assert exact(None, "Category: bug", "  category: BUG \n")  # trimmed, case-folded
    # a reference without an answer is a miss for every model, never "no answer" == "no answer"
    assert extract(r"#### (\d+)", "no digits") == NO_ANSWER
    assert not exact(r"#### (\d+)", NO_ANSWER, "no digits either")


def test_a_tenants_catastrophic_pattern_cannot_stall_the_evaluation() -> None:
    """`(a+)+$` against "aaa…!" backtracks for ever on Python's `re`; on RE2 it is a miss at
    once. In a process of its own with a time limit, so a regression fails here instead of
    hanging the suite (a backtracking match never lets go of the interpreter)."""
    done = subprocess.run([sys.executable, "-c", (
        "from worker.harness_metrics import extract; "
        "print(extract(r'(a+)+$', 'a' * 100_000 + '!'))")],
        capture_output=True, text=True, timeout=60, cwd=Path(__file__).parents[2])
    assert done.stdout.strip() == NO_ANSWER, done.stderr[-2000:]
    with pytest.raises(PatternError, match="invalid perl operator"):  # no lookbehind on RE2
        extract(r"(?<=#)(\d+)", "#4")


def test_the_harness_task_scores_every_reply_metric_with_the_copied_scoring_file(
        tmp_path: Path) -> None:
    """lm-eval runs the task's `!function` from the copied file, loaded outside sys.modules."""
    import yaml

    rows = task_rows(TICKETS, 2, None, lambda history: history[-1]["content"])
    write_tasks(tmp_path, rows, ["\n\n"], 16, [])
    task = yaml.safe_load((tmp_path / "factory_generation.yaml").read_text().replace(
        "!function", ""))
    assert [m["metric"] for m in task["metric_list"]] == ["exact_match", "rougeL", "bleu"]
    score = (  # in the worker's environment (ROUGE is lm-eval's dependency), as lm-eval loads it
        "import importlib.util, json, sys\n"
        "spec = importlib.util.spec_from_file_location('factory_utils', sys.argv[1])\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "print(json.dumps(module.generation_scores(json.loads(sys.argv[2]), [sys.argv[3]])))")
    done = subprocess.run([str(ROOT / ".venvs/train/bin/python"), "-c", score,
                           str(tmp_path / "factory_utils.py"), json.dumps(rows[1]),
                           "Category: bug\nPriority: high"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    scores = json.loads(done.stdout)
    assert scores["exact_match"] == 1.0 and scores["rougeL"] == 1.0
    assert scores["bleu"] == [rows[1]["reference"], "Category: bug\nPriority: high"]


def test_a_pattern_that_matches_no_reference_is_an_error_not_a_zero() -> None:
    rows = task_rows(TICKETS, 2, r"#### (\d+)", render=str)
    with pytest.raises(ValueError, match=r"finds no answer in any reference reply .*Category"):
        check_references(rows, r"#### (\d+)", log=None)


def test_conversation_splits_at_the_last_assistant_turn() -> None:
    history, reply = conversation(TICKETS[0])
    assert [m["role"] for m in history] == ["system", "user", "assistant", "user"]
    assert reply.startswith("Category: billing")


def write(tmp_path, evaluation: dict) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "factory.yaml").write_text(json.dumps({
        "base_models": {"tiny": {"source": "local"}},
        "datasets": {"tickets": {"sources": [{"path": "t.jsonl"}]}},
        "adapters": {"triage": {"base_model": "tiny", "dataset": "tickets"}},
        "evaluations": {"triage-eval": {"adapter": "triage", **evaluation}}}))


def test_the_primary_metric_follows_the_data(tmp_path) -> None:  # type: ignore[no-untyped-def]
    write(tmp_path, {})
    config = load_config(tmp_path / "factory.yaml")
    assert config.evaluations["triage-eval"].promotion.primary == "rougeL"
    assert config.served_metric("triage") == (None, "rougeL")
    write(tmp_path, {"answer_pattern": r"Category: (\w+)"})
    config = load_config(tmp_path / "factory.yaml")
    assert config.evaluations["triage-eval"].promotion.primary == "exact_match"
    assert config.served_metric("triage") == (r"Category: (\w+)", "exact_match")
    write(tmp_path, {"answer_pattern": "Category: \\w+"})
    with pytest.raises(ConfigError, match=r"evaluations\.triage-eval\.answer_pattern: .*needs a "
                                          "group around the answer"):
        load_config(tmp_path / "factory.yaml")


class EchoReplica(RecordingServer):
    """A chat endpoint that answers every conversation with `reply`."""

    reply = "Category: billing\nPriority: high"

    def route(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        return 200, {"choices": [{"message": {"role": "assistant", "content": self.reply}}]}


def test_the_served_evaluation_sends_a_private_replicas_key(tmp_path: Path) -> None:
    """A replica started with --api-key (every non-local target) answers only requests that
    carry the key; the served evaluation's worker gets it in its environment and sends it."""
    replica = EchoReplica()
    threading.Thread(target=replica.serve_forever, daemon=True).start()
    rows = tmp_path / "test.jsonl"
    rows.write_text("".join(json.dumps(row) + "\n" for row in TICKETS))
    score = ("import json, sys; from worker.evaluate_endpoint import score_endpoint; "
             "from worker.chat import scored_rows; from pathlib import Path; "
             f"r = score_endpoint({replica.url!r}, 'tickets', scored_rows(Path({str(rows)!r})), "
             "{'max_new_tokens': 8}); print(r['exact_match'])")

    def served_exact_match(**env: str) -> str:
        return subprocess.run([str(ROOT / ".venvs/train/bin/python"), "-c", score], cwd=ROOT,
                              env={"PATH": os.environ["PATH"], **env}, capture_output=True,
                              text=True, check=True).stdout.strip()

    assert served_exact_match(VLLM_API_KEY="replica-key") == "0.5"  # the first reply is right
    assert [h.get("authorization") for h in replica.headers] == ["Bearer replica-key"] * 2
    served_exact_match()
    assert "authorization" not in replica.headers[-1]
    replica.shutdown()
