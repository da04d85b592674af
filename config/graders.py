"""Reinforcement fine-tuning's settings (issue #45): the graders that score each sampled reply
(worker/graders.py's table: the evaluation's reply metrics, OpenAI's string_check, a format
check, a judge model asked through the gateway, a function of the platform's code; several are a
weighted `multi`) and GRPO's
sampling. A pattern is checked here on RE2, the engine that matches it during training and
evaluation."""

from __future__ import annotations

import importlib.util
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from config.common import Name, Strict
from config.metrics import SERVED
from worker.harness_metrics import answer_pattern as checked_pattern
from worker.harness_metrics import compiled
from worker.rewards import MAX_GRADERS


class Graded(Strict):
    weight: float = Field(1.0, ge=-10, le=10, description="its share of the reward")


class MetricGrader(Graded):
    """A reply metric of the evaluation, the gate's own function."""

    type: Literal["metric"]
    metric: Literal[SERVED]  # type: ignore[valid-type]
    answer_pattern: str | None = Field(None, max_length=200,
                                       description="exact_match: the answer's group")

    @field_validator("answer_pattern")
    @classmethod
    def _answer_group(cls, pattern: str | None) -> str | None:
        return checked_pattern(pattern)

    def label(self) -> str:
        return self.metric + (f" of {self.answer_pattern!r}" if self.answer_pattern else "")


class StringCheck(Graded):
    """OpenAI's string_check against the row's reference: eq, ne, like (contains), ilike."""

    type: Literal["string_check"]
    operation: Literal["eq", "ne", "like", "ilike"]

    def label(self) -> str:
        return f"string_check: {self.operation} the reference"


class FormatCheck(Graded):
    """1 when the reply matches the pattern (RE2), else 0."""

    type: Literal["format"]
    pattern: str = Field(max_length=200)

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, pattern: str) -> str:
        compiled(pattern)
        return pattern

    def label(self) -> str:
        return f"format: matches {self.pattern!r}"


class ScoreModel(Graded):
    """OpenAI's score_model: a model grades each reply with a rubric, with the evaluation's
    judge prompt and strict parse (worker/judging.py); reward = grade / 10, an unparsable
    judgement a counted 0. Asked through this project's gateway by default, so the judge's
    grants, quotas and audit rows apply to training like any application."""

    type: Literal["score_model"]
    model: str = Field(pattern=r"^[A-Za-z0-9][\w.:@-]{0,127}$",
                       description="a model the gateway serves (a deployment's adapter, mixture "
                                   "or base model)")
    rubric: str = Field(
        "You grade a candidate's reply against the reference reply to the same request: "
        "correct, complete and in the expected form.", min_length=1, max_length=4000)
    base_url: str | None = Field(None, pattern=r"^https?://",
                                 description="an OpenAI-compatible /v1 URL; default: this "
                                             "project's gateway")
    api_key_env: str = Field("FACTORY_JUDGE_KEY", pattern=r"^FACTORY_JUDGE_[A-Z0-9_]{1,48}$",
                             description="environment variable holding the key it is asked "
                                         "with, FACTORY_JUDGE_*: no other secret of the "
                                         "platform's environment can be sent to a judge (passed "
                                         "to the training job alone; never in the rows)")

    def label(self) -> str:
        return f"score_model: {self.model} grades it 1-10 against the reference"


class PythonGrader(Graded):
    """A function of the platform's own code, `fn(reference, reply) -> float`, by dotted path:
    factory.yaml is the platform engineers' file; the Studio offers members no grader."""

    type: Literal["python"]
    path: str = Field(pattern=r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+$", max_length=200)

    @field_validator("path")
    @classmethod
    def _module_exists(cls, path: str) -> str:
        """The module must be there (its function is looked up where training runs)."""
        module = path.rpartition(".")[0]
        try:
            found = importlib.util.find_spec(module)
        except (ImportError, ValueError) as exc:
            raise ValueError(f"cannot find module {module!r}: {exc}") from exc
        if found is None:
            raise ValueError(f"no module {module!r} on this platform's path")
        return path

    def label(self) -> str:
        return f"python: {self.path}"


Grader = Annotated[MetricGrader | StringCheck | FormatCheck | ScoreModel | PythonGrader,
                   Field(discriminator="type")]


class GrpoSpec(Strict):
    """objective: grpo: each prompt's `num_generations` sampled replies scored by the graders,
    the model pushed toward the better ones (group-relative advantages)."""

    graders: list[Grader] = Field(
        default_factory=list, max_length=MAX_GRADERS,
        description="empty: the adapter's evaluation's own scorer (exact match with its "
                    "answer_pattern, else ROUGE-L)")
    num_generations: int = Field(4, ge=2, le=64, description="replies sampled per prompt")
    max_completion_length: int = Field(64, ge=1, le=8192)
    temperature: float = Field(1.0, gt=0, le=2)
    beta: float = Field(0.04, ge=0, le=1, description="KL penalty toward the starting weights "
                                                      "(0: none, and no KL is logged)")
    start_from: Name | None = Field(
        None, description="an adapter whose champion's weights this one starts from (SFT, "
                          "then RL); its LoRA rank and alpha are kept")

    def rendered_graders(self, default: dict[str, Any], gateway_url: str
                         ) -> list[dict[str, Any]]:
        """The graders as the reward functions read them; `default` stands in for none, and a
        judge with no base_url is asked through `gateway_url`."""
        rendered = [g.model_dump() for g in self.graders] or [default]
        return [g | {"base_url": f"{gateway_url}/v1"}
                if g["type"] == "score_model" and g["base_url"] is None else g
                for g in rendered]
