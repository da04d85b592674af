"""The `mixtures` section: promoted adapters merged with weights, declared or searched."""

from __future__ import annotations

import itertools
from typing import Literal

from pydantic import (
    Field,
    model_validator,
)

from config.adapters import AdapterSpec
from config.base_models import BaseModelSpec, language_model_problems
from config.common import Name, Strict, reference_problems
from config.evaluations import EvaluationSpec


class WeightSearch(Strict):
    """Mixture weights chosen on held-out data: every point of a grid on the simplex (weights
    that sum to 1, each single member included) and the declared weights are scored by the
    mixture's loss on the final replies of each component's val split (the components' datasets
    count equally); the lowest wins."""

    step: float = Field(0.25, gt=0, le=0.5, description="grid spacing of each weight")
    rows: int = Field(32, ge=1, description="val rows scored per component dataset")

    def grid(self, members: int) -> list[tuple[float, ...]]:
        units = round(1 / self.step)
        points = [p for p in itertools.product(range(units + 1), repeat=members)
                  if sum(p) == units]
        return [tuple(round(u / units, 6) for u in p) for p in points]


MAX_MIXTURE_TRIALS = 64


class MixtureSpec(Strict):
    """Several promoted adapters applied with weights, built as one LoRA and served like one."""

    base_model: Name
    adapters: dict[Name, float] = Field(min_length=2)
    combination: Literal["cat", "linear"] = Field(
        "cat", description="cat: exact weighted sum (rank = sum of ranks); linear: same ranks")
    search: WeightSearch | None = Field(
        None, description="choose the weights on the components' val splits instead of using "
                          "`adapters`' weights as they are (those are one more candidate)")

    @model_validator(mode="after")
    def _bounded_search(self) -> MixtureSpec:
        if self.search is None:
            return self
        if abs(round(1 / self.search.step) * self.search.step - 1) > 1e-9:
            raise ValueError(f"search.step {self.search.step} must divide 1 (0.5, 0.25, 0.2, "
                             "0.1, ...)")
        trials = len(self.search.grid(len(self.adapters)))
        if trials > MAX_MIXTURE_TRIALS:
            raise ValueError(f"search.step {self.search.step} over {len(self.adapters)} adapters "
                             f"is {trials} trials (at most {MAX_MIXTURE_TRIALS}); use a larger "
                             "step")
        return self


def mixture_problems(mixtures: dict[str, MixtureSpec], base_models: dict[str, BaseModelSpec],
                     adapters: dict[str, AdapterSpec], evaluations: dict[str, EvaluationSpec]
                     ) -> list[str]:
    problems: list[str] = []
    evaluated = {e.adapter for e in evaluations.values()}
    for name, m in mixtures.items():
        problems += language_model_problems(f"mixtures.{name}.base_model", m.base_model,
                                            base_models)
        if name in adapters:
            problems.append(f"mixtures.{name}: an adapter has the same name; rename one")
        for adapter in m.adapters:
            problems += reference_problems(f"mixtures.{name}.adapters.{adapter}", adapter,
                                           adapters, "adapters")
            if adapter in adapters and adapters[adapter].method == "full":
                problems.append(f"mixtures.{name}.adapters.{adapter}: a full fine-tune has "
                                "no LoRA weights to mix")
            if adapter in adapters and adapter not in evaluated:
                problems.append(f"mixtures.{name}.adapters.{adapter}: has no evaluation, so "
                                "it is never promoted; declare one under evaluations")
    return problems
