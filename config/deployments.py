"""The `deployments` section: what each vLLM deployment serves, where, and how it is evaluated."""

from __future__ import annotations

from typing import Literal

from pydantic import (
    Field,
    model_validator,
)

from config.adapters import AdapterSpec
from config.base_models import BaseModelSpec
from config.common import STUDIO_SEPARATOR, Name, Strict, reference_problems
from config.evaluations import EvaluationSpec
from config.mixtures import MixtureSpec
from config.monitoring import MonitorSpec
from config.storage import Storage


class EndpointEvalSpec(Strict):
    """Score the served models through the endpoint (what users get), with latency."""

    limit: int = Field(50, ge=1)
    max_new_tokens: int = Field(64, ge=1)
    timing_requests: int = Field(8, ge=1, description="streamed requests for TTFT / TPOT")
    canary_rows: int = Field(4, ge=1, le=16, description=(
        "test rows the batch-isolation canary asks every served model alone and then all at "
        "once (worker/batch_canary.py); a changed answer fails the batch_isolation check"))
    canary_tokens: int = Field(16, ge=1, le=256, description=(
        "greedy tokens per canary answer: a borrowed adapter shows in the first few, while "
        "long answers give float noise between batch shapes more chances to flip a near-tie"))


WHISPER_DECODER_TOKENS = 448  # Whisper's decoder window: a speech deployment's max_model_len


class TranscriptionEvalSpec(Strict):
    """Word error rate of a speech deployment, through its endpoint, on held-out recordings:
    sentences of a corpus spoken by espeak-ng in each voice at each speed, plus a folder of a
    user's own recordings (each `<name>.<audio>` beside a `<name>.txt` of what is said)."""

    sentences: int = Field(8, ge=1, le=500, description="sentences spoken per voice and speed")
    corpus: Name | None = Field(None, description="whose documents the sentences come from "
                                                  "(default: the demo's generated filings)")
    voices: list[str] = Field(default_factory=lambda: ["en-us", "en-gb"], min_length=1,
                              description="espeak-ng voices (`espeak-ng --voices`)")
    speeds: list[int] = Field(default_factory=lambda: [150, 190], min_length=1,
                              description="espeak-ng words per minute")
    recordings: str | None = Field(None, description="a folder of your own recordings and "
                                                     "their transcripts, relative to this file")
    language: str = Field("en", pattern=r"^[a-z]{2,3}$")
    max_wer: float = Field(0.35, gt=0, le=1, description="the blocking check's bound")
    seed: int = 0


class KubernetesTarget(Strict):
    """Where and how `target: kubernetes` runs its replicas. The control plane talks to the API
    with the official client (in-cluster config inside a pod, else the kubeconfig) and reaches
    each pod on the pod network to refresh it, so it runs in the cluster (infra/k8s/)."""

    namespace: str = Field("default", pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
    image: str | None = Field(None, description="the replica image (infra/docker/"
                                                "replica.Dockerfile); default its tag at the "
                                                "serving pin")
    gpus: int = Field(1, ge=0)
    kube_context: str | None = Field(None, description="kubeconfig context (default: in-cluster "
                                                       "config inside a pod, else current)")
    api_url: str | None = Field(None, description="talk to this API URL without credentials "
                                                  "(`kubectl proxy`, tests)")
    rollout_timeout_s: int = Field(1800, ge=10, description="for every replica to be ready")


class HotAdapters(Strict):
    """Merged serving for the adapters that carry most of a deployment's recent traffic.

    vLLM's LoRA path costs every request of every adapter (about half the base model's tokens/s
    on CPU). An adapter with a large share of the traffic (the gateway's usage records) is served
    from its own replica whose base weights have the adapter merged in (a plain model under the
    adapter's name, no LoRA cost); the gateway prefers that replica and falls back to the
    multi-LoRA replicas, which keep serving it. What is merged changes only when the deployment
    is materialized, and its metadata says why."""

    min_share: float = Field(0.5, gt=0, le=1, description="an adapter's share of the tokens the "
                             "deployment generated in the window that makes it hot")
    window_hours: float = Field(24, gt=0, description="how far back the usage records count")
    min_requests: int = Field(100, ge=1, description="fewer requests to the deployment in the "
                              "window are too few to judge: nothing is merged")
    max_merged: int = Field(1, ge=1, le=4, description="merged replicas at most (each holds a "
                            "whole copy of the base weights)")
    port: int | None = Field(None, ge=1024, le=65535, description="the first merged replica's "
                             "port (then +1, ...); default: right after the LoRA replicas")
    review: str | None = Field(
        "0 * * * *", description="cron (UTC): when the deployment is materialized again to apply "
                                 "the policy to the latest traffic; null = only when it is "
                                 "materialized for another reason")


class DeploymentSpec(Strict):
    """One base model + adapters on `replicas` vLLM servers (target: local) or on vLLM servers
    already running elsewhere (target: hosts)."""

    base_model: Name
    evaluate: EndpointEvalSpec | None = Field(
        None, description="also evaluate through the endpoint after each deployment")
    transcription_eval: TranscriptionEvalSpec | None = Field(
        None, description="a speech deployment: word error rate through the endpoint")
    adapters: list[Name] = Field(default_factory=list)
    monitor: MonitorSpec | None = Field(
        None, description="watch what is served: the gateway's measures, drift, alerts")
    target: Literal["local", "hosts", "kubernetes"] = Field(
        "local", description="local: vLLM processes on this machine (host, port, replicas); "
                             "hosts: the vLLM servers listed in `hosts`, health-checked and "
                             "refreshed; kubernetes: a Deployment of `replicas` pods and its "
                             "Service, applied through the Kubernetes API")
    kubernetes: KubernetesTarget = KubernetesTarget()
    hosts: list[str] = Field(
        default_factory=list, max_length=64,
        description="target hosts: each server's base URL (http://10.0.0.5:8000), started with "
                    "the object store's LoRA resolver (`factory render-deployment`'s scripts)")
    host: str = "127.0.0.1"
    port: int = Field(8010, ge=1024, le=65535)
    replicas: int = Field(1, ge=1, le=16, description="servers on port, port+1, ...; the "
                                                      "gateway routes and fails over between them")
    recycle_rss_growth_mib: int | None = Field(
        4096, ge=0, description="restart a server (drained) whose memory grew this much from "
                                "adapter swaps; null = never")
    max_model_len: int = Field(512, ge=64)
    max_loras: int = Field(4, ge=0, description="adapters resident at once; 0 serves the base "
                                                  "model without LoRA support (and its cost)")
    max_lora_rank: int | None = Field(
        None, ge=1, le=512, description="LoRA slots sized for adapters up to this rank, so a "
        "later champion of a larger rank is pulled by the running replicas; default: the "
        "largest rank served now (a larger one then restarts local replicas, rolls pods)")
    kv_cache_gib: int = Field(1, ge=1)
    extra_args: list[str] = Field(default_factory=list, description="more vLLM server flags")
    startup_timeout_s: int = Field(300, ge=10)
    hot_adapters: HotAdapters | None = Field(
        None, description="serve the adapters with most of the recent traffic merged into "
                          "their own replica (target: local); null = every adapter via LoRA")

    @model_validator(mode="after")
    def _hosts_with_their_target(self) -> DeploymentSpec:
        if self.target == "hosts" and not self.hosts:
            raise ValueError("target: hosts lists its servers in `hosts` (http://host:port)")
        if self.target != "hosts" and self.hosts:
            raise ValueError(f"hosts is for target: hosts (this deployment's target is "
                             f"{self.target})")
        bad = [h for h in self.hosts if not h.startswith(("http://", "https://"))]
        if bad or len(set(self.hosts)) != len(self.hosts):
            raise ValueError(f"hosts are distinct http(s)://host:port URLs, got {self.hosts}")
        if self.hot_adapters is not None and self.target != "local":
            raise ValueError("hot_adapters starts merged replicas on this machine (target: "
                             f"local); this deployment's target is {self.target}")
        return self

    def replica_names(self, name: str) -> list[tuple[str, int]]:
        """(server name, port) of each replica; the first keeps the deployment's own name."""
        return [(name if i == 0 else f"{name}.{i}", self.port + i) for i in range(self.replicas)]

    def merged_replica(self, name: str, adapter: str, index: int) -> tuple[str, int]:
        """(server name, port) of the replica serving `adapter` merged, the `index`-th one."""
        assert self.hot_adapters is not None
        first = self.hot_adapters.port or self.port + self.replicas
        return f"{name}.merged.{adapter}", first + index


def speech_deployment_problems(name: str, d: DeploymentSpec, base: BaseModelSpec | None
                                ) -> list[str]:
    """A speech model is served alone (vLLM's Whisper takes no LoRA) within Whisper's decoder
    window; a language model's deployment has no word error rate."""
    where = f"deployments.{name}"
    if base is None or not base.speech:
        return [f"{where}.transcription_eval: '{d.base_model}' is not a speech model"
                ] if d.transcription_eval else []
    problems = []
    if d.adapters:
        problems.append(f"{where}.adapters: a speech model is served without adapters")
    if d.max_loras:
        problems.append(f"{where}.max_loras: set it to 0 (vLLM serves Whisper without LoRA)")
    if d.max_model_len > WHISPER_DECODER_TOKENS:
        problems.append(f"{where}.max_model_len: Whisper's decoder reads at most "
                        f"{WHISPER_DECODER_TOKENS} tokens; set it to {WHISPER_DECODER_TOKENS}")
    if d.evaluate is not None or d.hot_adapters is not None:
        problems.append(f"{where}: evaluate and hot_adapters are for language models; a speech "
                        "deployment is scored by transcription_eval")
    return problems


def deployment_problems(deployments: dict[str, DeploymentSpec],
                        base_models: dict[str, BaseModelSpec], adapters: dict[str, AdapterSpec],
                        mixtures: dict[str, MixtureSpec], evaluations: dict[str, EvaluationSpec],
                        storage: Storage) -> list[str]:
    problems: list[str] = []
    servable = {**adapters, **mixtures}
    evaluated = {e.adapter for e in evaluations.values()}
    for name, d in deployments.items():
        problems += reference_problems(f"deployments.{name}.base_model", d.base_model,
                                       base_models, "base_models")
        problems += speech_deployment_problems(name, d, base_models.get(d.base_model))
        for i, adapter in enumerate(d.adapters):
            problems += reference_problems(f"deployments.{name}.adapters[{i}]", adapter,
                                           servable, "adapters or mixtures")
            spec = servable.get(adapter)
            if spec and spec.base_model != d.base_model:
                problems.append(
                    f"deployments.{name}.adapters[{i}]: '{adapter}' is trained on "
                    f"'{spec.base_model}' but this deployment serves '{d.base_model}'")
            if adapter in adapters and adapters[adapter].method == "full":
                problems.append(f"deployments.{name}.adapters[{i}]: '{adapter}' is a full "
                                "fine-tune, not a LoRA; serve it as its own model")
            if adapter in adapters and adapter not in evaluated:
                problems.append(
                    f"deployments.{name}.adapters[{i}]: '{adapter}' has no evaluation; "
                    "declare one under evaluations (its promotion gate decides what serves)")
        declared = [a for a in d.adapters if STUDIO_SEPARATOR not in a]
        if len(declared) > d.max_loras:  # Studio adapters are loaded when asked for
            problems.append(f"deployments.{name}.max_loras: raise it to >= {len(declared)}")
        if d.target != "local" and not storage.object_store.startswith("s3://"):
            problems.append(
                f"deployments.{name}.target: {d.target} servers pull adapters from the object "
                f"store, and storage.object_store {storage.object_store} is a folder on "
                "this machine; set it to an s3://bucket/prefix they can read "
                "(storage.s3_endpoint_url for MinIO or another S3-compatible server)")
    return problems + judge_problems(deployments, adapters)


def judge_problems(deployments: dict[str, DeploymentSpec], adapters: dict[str, AdapterSpec]
                   ) -> list[str]:
    """A GRPO judge asked through this project's gateway must be a model it serves."""
    served = {m for d in deployments.values() for m in (d.base_model, *d.adapters)}
    return [f"adapters.{name}.grpo.graders.{i}.model: the gateway serves no {g.model!r} "
            f"(served: {', '.join(sorted(served)) or 'nothing'}); name one, or give base_url "
            "for another OpenAI-compatible endpoint"
            for name, a in adapters.items() if a.grpo
            for i, g in enumerate(a.grpo.graders)
            if g.type == "score_model" and g.base_url is None and g.model not in served]
