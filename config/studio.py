"""What Studio members create, as data: their uploads and trainings, stored per project in the
object store and merged into the platform's config as ordinary datasets, adapters and evaluations.

`factory.yaml` stays the platform's declaration (base models, deployments, bounds); a Studio
training becomes `datasets.<full>`, `adapters.<full>` and `evaluations.<full>` of the same code
location, validated by the same schema, so the Dagster UI shows them like any other asset.

Names: a training's assets are `<project>--<name>`. A training name never contains `--`, so
two projects can never produce the same asset name, and the project is read back from it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from config.common import NAME, Strict
from config.common import STUDIO_SEPARATOR as SEPARATOR
from config.objectives import OBJECTIVES
from worker.harness_metrics import answer_pattern

STUDIO = "studio"
TRAINING_NAME = r"^[a-z][a-z0-9_]*(-[a-z0-9_]+)*$"  # no `--`: the separator stays unique
UPLOAD_ID = re.compile(r"[0-9a-f]{32}")
log = logging.getLogger("factory.studio")


class TaskTemplate(Strict):
    """What a member's task is, in their words, and how it is scored."""

    label: str
    primary: Literal["exact_match", "rougeL"]
    pattern: bool = False  # the member may give an answer pattern (extraction)


TASKS: dict[str, TaskTemplate] = {
    "chat": TaskTemplate(label="Chat assistant (scored by ROUGE-L)", primary="rougeL"),
    "classification": TaskTemplate(label="Classification (exact match on the whole reply)",
                                   primary="exact_match"),
    "extraction": TaskTemplate(label="Extraction (exact match on the answer pattern's group)",
                               primary="exact_match", pattern=True),
    "summarisation": TaskTemplate(label="Summarisation (scored by ROUGE-L)", primary="rougeL"),
}


class Hyperparameters(Strict):
    """The knobs a member may turn; the platform's bounds (StudioSettings) cap them."""

    max_steps: int = Field(ge=1)
    learning_rate: float = Field(gt=0, le=0.01)
    lora_r: int = Field(ge=1, le=64)
    micro_batch_size: int = Field(ge=1, le=32)
    seed: int = Field(0, ge=0, le=2**31 - 1)


# how hard a member's training works: each effort a set of hyperparameters the form starts from
# (an adapter's size `preset` in factory.yaml is another thing: config/size_presets.py)
EFFORTS: dict[str, Hyperparameters] = {
    "quick": Hyperparameters(max_steps=30, learning_rate=2e-3, lora_r=8, micro_batch_size=8),
    "standard": Hyperparameters(max_steps=120, learning_rate=1e-3, lora_r=16, micro_batch_size=8),
    "thorough": Hyperparameters(max_steps=300, learning_rate=5e-4, lora_r=32, micro_batch_size=8),
}

DATA_KINDS = ("sft", "preference", "feedback")
# Members upload what they have: e-mail addresses, phone, social security and card numbers are
# scrubbed before any model sees them (the engineer's datasets choose for themselves).
STUDIO_PII = {"scrub": True}
STUDIO_OBJECTIVES = tuple(o for o, spec in OBJECTIVES.items()
                          if spec.scored and set(spec.data) & set(DATA_KINDS))


class TrainingRequest(Strict):
    """A member's Launch form."""

    name: str = Field(pattern=TRAINING_NAME, max_length=40)
    dataset: str = Field(pattern=UPLOAD_ID.pattern.join("^$"), description="an upload's id")
    base_model: str = Field(pattern=NAME)
    task: Literal[tuple(TASKS)] = "chat"  # type: ignore[valid-type]
    objective: Literal[STUDIO_OBJECTIVES] = "sft"  # type: ignore[valid-type]
    effort: Literal[tuple(EFFORTS)] = "quick"  # type: ignore[valid-type]
    hyperparameters: Hyperparameters | None = Field(
        None, description="the effort's values, edited; default: the effort as it is")
    answer_pattern: str | None = Field(None, max_length=200)

    @model_validator(mode="before")
    @classmethod
    def _stored_before_efforts(cls, data: Any) -> Any:
        """A training stored before 2026-12-07 names its effort `preset`: read it as one."""
        if isinstance(data, dict) and "preset" in data and "effort" not in data:
            data = {**data, "effort": data["preset"]}
            del data["preset"]
        return data

    @field_validator("answer_pattern")
    @classmethod
    def _compiles(cls, pattern: str | None) -> str | None:
        """A pattern that does not compile on RE2, the linear-time engine replies are matched
        with, is the member's 400, not the evaluation's crash; a group is the answer."""
        return answer_pattern(pattern)

    @model_validator(mode="after")
    def _checkable(self) -> TrainingRequest:
        """Reinforcement needs an answer a grader can check: the task's own scorer grades."""
        if self.objective == "grpo" and TASKS[self.task].primary != "exact_match":
            raise ValueError("Reinforcement (grpo) needs a task with a checkable answer: "
                             "classification or extraction")
        return self

    def chosen(self) -> Hyperparameters:
        return self.hyperparameters or EFFORTS[self.effort]


class StoredTraining(Strict):
    """A training as stored: the request plus who made it and the data it reads."""

    project: str
    project_id: int
    created_by: str
    created_at: float
    request: TrainingRequest
    data_kind: Literal[DATA_KINDS]  # type: ignore[valid-type]
    data_format: str = "auto"
    field_map: dict[str, str] = Field(default_factory=dict)
    source: dict[str, str] = Field(description="the dataset source: {'path': ...} or {'s3': ...}")

    @property
    def full_name(self) -> str:
        return full_name(self.project, self.request.name)


def full_name(project: str, name: str) -> str:
    return f"{project}{SEPARATOR}{name}"


def project_of(asset_name: str) -> str | None:
    """The project a Studio asset name belongs to (None: declared in factory.yaml)."""
    project, sep, _ = asset_name.rpartition(SEPARATOR)
    return project if sep else None


# Object keys. Trainings lie flat under one prefix, so the code location lists them in one call;
# a project's id (never a name a tenant chose) leads every key of its own.
TRAININGS = f"{STUDIO}/trainings"


def training_key(project_id: int, name: str) -> str:
    return f"{TRAININGS}/{project_id}-{name}.json"


def uploads_prefix(project_id: int) -> str:
    return f"{STUDIO}/uploads/{project_id}"


def studio_entries(training: StoredTraining, deployments: dict[str, Any]) -> dict[str, Any]:
    """The raw config entries of one training, in factory.yaml's shape."""
    request, name = training.request, training.full_name
    params = request.chosen()
    template = TASKS[request.task]
    evaluation: dict[str, Any] = {"adapter": name, "promotion": {"primary": template.primary},
                                  "limit": 50, "max_new_tokens": 64}
    if template.pattern and request.answer_pattern:
        evaluation["answer_pattern"] = request.answer_pattern
    return {
        "datasets": {name: {"kind": training.data_kind, "sources": [training.source],
                            "format": training.data_format, "field_map": training.field_map,
                            "base_model": request.base_model, "pii": STUDIO_PII}},
        "adapters": {name: {
            "base_model": request.base_model, "dataset": name, "objective": request.objective,
            "lora": {"r": params.lora_r, "alpha": 2 * params.lora_r},
            "training": {"max_steps": params.max_steps, "learning_rate": params.learning_rate,
                         "micro_batch_size": params.micro_batch_size, "seed": params.seed,
                         "warmup_steps": min(10, params.max_steps // 10)},
            "card": {"intended_use": f"Trained in the Studio by {training.created_by} of "
                                     f"project {training.project} ({template.label})."}}},
        "evaluations": {name: evaluation},
        "deployments": {d: name for d, spec in deployments.items()
                        if spec.get("base_model") == request.base_model},
    }


def merge_trainings(raw: dict[str, Any], trainings: list[StoredTraining]) -> dict[str, Any]:
    """factory.yaml's raw mapping with every training's entries added; a name already
    declared is left as declared (the schema then reports the training's conflict)."""
    merged = {**raw}
    for section in ("datasets", "adapters", "evaluations", "deployments"):
        merged[section] = dict(raw.get(section) or {})
    for training in trainings:
        entries = studio_entries(training, merged["deployments"])
        for section in ("datasets", "adapters", "evaluations"):
            for name, entry in entries[section].items():
                merged[section].setdefault(name, entry)
        for deployment, adapter in entries["deployments"].items():
            spec = dict(merged["deployments"][deployment])
            spec["adapters"] = [*spec.get("adapters", []), adapter]
            merged["deployments"][deployment] = spec
    return merged


def parse_trainings(keys: list[str], read_json: Callable[[str], Any]) -> list[StoredTraining]:
    """The trainings stored under `keys`, oldest first; an unreadable one is logged and left
    out (a tenant's object never stops the platform's code location from loading)."""
    trainings = []
    for key in keys:
        if not key.endswith(".json"):
            continue
        try:
            trainings.append(StoredTraining.model_validate(read_json(key)))
        except (ValidationError, ValueError) as exc:
            log.warning("Studio training %s left out: %s", key, exc)
    return sorted(trainings, key=lambda t: t.created_at)
