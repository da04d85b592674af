"""The declarative project file (`factory.yaml`): what the user declares, validated up front.

Every asset is generated from this file, so a new adapter or corpus is YAML, not code. A mistake
fails before anything runs, with the key path and what to write instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import (
    Field,
    PrivateAttr,
    model_validator,
)

from config.adapters import AdapterSpec, adapter_problems
from config.base_models import BaseModelSpec
from config.common import ConfigProblems, Name, Strict
from config.compute_spec import ComputeSpec
from config.corpora import CorpusSpec, corpus_problems
from config.datasets import CorpusDatasetSource, DatasetSpec, dataset_problems
from config.deployments import DeploymentSpec, deployment_problems
from config.evaluations import EvaluationSpec, evaluation_problems
from config.gateway import GatewaySettings
from config.metrics import SERVED
from config.mixtures import MixtureSpec, mixture_problems
from config.monitoring import AlertsSpec
from config.storage import Storage
from config.training import TrackingSpec


class SchedulesSpec(Strict):
    """Cron expressions (UTC); null turns a schedule off."""

    reevaluate: str | None = Field(
        "0 2 * * *", description="re-score served adapters; a regression fails a check")
    retrain: str | None = Field(
        None, description="rebuild datasets and retrain downstream (e.g. '0 3 * * 0' weekly)")
    usage: str | None = Field(
        None, description="materialize gateway/usage from the running gateway's admin API "
                          "(needs gateway.admin_token_env set here too), e.g. '0 * * * *'")
    automation_interval_s: int = Field(
        30, ge=5, description="how often the automation sensor evaluates what to rebuild")
    regression_tolerance: float = Field(
        0.05, ge=0, description="allowed drop of served exact match below the promoted score")


class FactoryConfig(Strict):
    project: str = "adapter-factory"
    storage: Storage = Storage()
    base_models: dict[Name, BaseModelSpec] = Field(default_factory=dict)
    datasets: dict[Name, DatasetSpec] = Field(default_factory=dict)
    adapters: dict[Name, AdapterSpec] = Field(default_factory=dict)
    evaluations: dict[Name, EvaluationSpec] = Field(default_factory=dict)
    mixtures: dict[Name, MixtureSpec] = Field(default_factory=dict)
    deployments: dict[Name, DeploymentSpec] = Field(default_factory=dict)
    corpora: dict[Name, CorpusSpec] = Field(default_factory=dict)
    schedules: SchedulesSpec = SchedulesSpec()
    compute: ComputeSpec = ComputeSpec()
    tracking: TrackingSpec = TrackingSpec()
    gateway: GatewaySettings = Field(default_factory=GatewaySettings,
                                     description="the OpenAI-compatible gateway (gateway/)")
    alerts: AlertsSpec = AlertsSpec()
    erasure: Literal["flag", "retrain", "unpublish"] = Field(
        "flag", description="what `factory forget` does to adapters trained on erased data "
                            "besides marking them: retrain them through the gate, or stop "
                            "serving them")
    _root: Path = PrivateAttr(default_factory=Path.cwd)
    _path: Path | None = PrivateAttr(default=None)  # the file it was read from

    @model_validator(mode="after")
    def _references(self) -> FactoryConfig:
        """Cross-references must point at declared entries (each section's rules beside it)."""
        problems = [
            *adapter_problems(self.adapters, self.base_models, self.datasets, self.compute),
            *dataset_problems(self.datasets, self.base_models, self.corpora),
            *evaluation_problems(self.evaluations, self.adapters),
            *mixture_problems(self.mixtures, self.base_models, self.adapters, self.evaluations),
            *deployment_problems(self.deployments, self.base_models, self.adapters, self.mixtures,
                                 self.evaluations, self.storage),
            *corpus_problems(self.corpora, self.speech_deployments())]
        if problems:
            raise ConfigProblems(problems)
        return self

    def datasets_reading(self, corpus: str) -> list[str]:
        """The datasets with a {corpus} source naming `corpus`: what its documents train."""
        return [name for name, d in self.datasets.items()
                if any(isinstance(s, CorpusDatasetSource) and s.corpus == corpus
                       for s in d.sources)]

    def speech_deployments(self) -> list[str]:
        return [n for n, d in self.deployments.items() if self.is_speech_deployment(n)]

    def is_speech_deployment(self, name: str) -> bool:
        d = self.deployments.get(name)
        return bool(d and d.base_model in self.base_models
                    and self.base_models[d.base_model].speech)

    @property
    def root(self) -> Path:
        """The folder of the config file: relative paths in it are relative to this."""
        return self._root

    def resolve(self, path: str) -> Path:
        return (self._root / path).resolve()

    @property
    def work_dir(self) -> Path:
        return self.resolve(self.storage.work_dir)

    def served_metric(self, adapter: str) -> tuple[str | None, str]:
        """How an adapter's served replies are scored: its evaluation's answer pattern and the
        metric tracked for regressions (its primary when an endpoint can measure it, else the
        one its data implies)."""
        spec = next((e for e in self.evaluations.values() if e.adapter == adapter), None)
        pattern = spec.answer_pattern if spec else None
        primary = spec.promotion.primary if spec else None
        if primary in SERVED:
            return pattern, primary
        return pattern, "exact_match" if pattern else "rougeL"

    def graders_of(self, adapter: str) -> list[dict[str, Any]]:
        """A GRPO adapter's graders as its reward functions read them: the declared ones, or
        its evaluation's scorer (its primary metric when it is scored per reply, else exact
        match with its answer pattern, or ROUGE-L without one; worker/graders.py)."""
        pattern, metric = self.served_metric(adapter)
        return self.adapters[adapter].rl.rendered_graders(
            {"type": "metric", "metric": metric, "answer_pattern": pattern, "weight": 1.0},
            self.gateway.base_url)

    @property
    def gateway_settings(self) -> GatewaySettings:
        """The gateway's settings as it runs them: Chroma, the object store (where the
        deployments publish their replicas) and the dead-letter file default to `storage`,
        relative paths to this file's folder."""
        given = self.gateway.model_fields_set
        update: dict[str, Any] = {}
        if "chroma_path" not in given:
            update["chroma_path"] = f"{self.storage.work_dir}/chroma"
        if "chroma_url" not in given and self.storage.chroma_url:
            update["chroma_url"] = self.storage.chroma_url
        if "object_store" not in given:
            update["object_store"] = self.storage.object_store
            update["s3_endpoint_url"] = self.storage.s3_endpoint_url
        if self.gateway.studio.platform_config is None and self._path is not None:
            # the Studio validates members' trainings against this very file
            update["studio"] = self.gateway.studio.model_copy(
                update={"platform_config": str(self._path)})
        if not self.gateway.speech.models:
            update["speech"] = self.gateway.speech.model_copy(update={"models": sorted(
                {self.deployments[n].base_model for n in self.speech_deployments()})})
        if "audit_dead_letter" not in given:
            update["audit_dead_letter"] = (f"{self.storage.work_dir}/"
                                           "gateway-audit-dead-letter.jsonl")
        return self.gateway.model_copy(update=update).with_environment().anchored(self._root)
