"""The `compute` section: where training runs; each machine kind in compute.MACHINES adds its
settings."""

from __future__ import annotations

from typing import Literal

from pydantic import (
    Field,
    create_model,
    field_validator,
    model_validator,
)

from compute import MACHINES
from compute.gpus import GPUS, GpuBox, parse_gpu
from compute.kernels import REPRODUCIBLE_CPU, SHARED_CPU
from compute.machine import RemoteSpec
from config.common import Strict


class ComputeBase(Strict):
    """Where training runs. The Axolotl YAML is the same everywhere; only device keys differ.
    Each kind of machine in compute.MACHINES adds its settings under `compute.<kind>`."""

    device: Literal["cpu", "gpu"] = "cpu"
    concurrency: int = Field(1, ge=1, description="training steps at once on this target "
                                                  "(the Dagster pool's limit)")
    max_runtime_s: int = Field(6 * 3600, ge=60, description="runs that train are stopped after "
                                                             "this (Dagster run monitoring)")
    reproducible: bool = Field(True, description=(
        "cpu: the same kernels on every x86-64 machine and thread count, so a seeded run does "
        "not depend on the CPU's vector width or core count (10-18% slower); false: each "
        "machine's fastest kernels"))
    gpu: str | None = Field(None, description=(
        "the training machine's GPUs, '<card>' or '<count> x <card>' (cards: "
        + ", ".join(GPUS) + "); default: what compute.<kind> says (the EC2 instance type, the "
        "Compute Engine accelerator, k8s gpu_model x gpus). A device: gpu recipe is checked "
        "against it (memory, time per step) before any machine starts"))

    @field_validator("gpu")
    @classmethod
    def _gpu(cls, text: str | None) -> str | None:
        if text is not None:
            parse_gpu(text)
        return text

    @property
    def gpu_box(self) -> GpuBox | None:
        """The GPUs training runs on: `gpu` when given, else what the machine's settings say;
        None on a CPU or where nothing names a card."""
        if self.device != "gpu":
            return None
        if self.gpu is not None:
            return parse_gpu(self.gpu)
        return self.machine.gpu_box() if self.machine else None

    @property
    def kernel_env(self) -> dict[str, str]:
        """What every worker job (training, evaluation, merging) runs with."""
        if self.device != "cpu":
            return {}
        return {**SHARED_CPU, **(REPRODUCIBLE_CPU if self.reproducible else {})}

    @property
    def pool(self) -> str:
        return f"train-{self.kind}-{self.device}"  # type: ignore[attr-defined]

    @property
    def machine(self) -> RemoteSpec | None:
        """The settings of the kind of machine that trains; None for a local subprocess."""
        kind: str = self.kind  # type: ignore[attr-defined]
        return None if kind == "local" else getattr(self, kind)

    @model_validator(mode="after")
    def _launcher_settings(self) -> ComputeBase:
        kind: str = self.kind  # type: ignore[attr-defined]
        if kind != "local" and getattr(self, kind) is None:
            fields = MACHINES[kind].model_fields
            needed = sorted((n for n, f in fields.items() if f.is_required()),
                            key=lambda n: n in RemoteSpec.model_fields)  # its own ones first
            listed = ", ".join(needed[:-1]) + " and " if len(needed) > 1 else ""
            raise ValueError(f"compute.kind is {kind} but compute.{kind} is missing: "
                             f"give at least {listed}{needed[-1]}")
        return self


ComputeSpec = create_model(
    "ComputeSpec", __base__=ComputeBase,
    kind=(Literal[("local", *MACHINES)], Field(  # type: ignore[valid-type]
        "local", description="local: a subprocess via Dagster Pipes; "
        + " / ".join(MACHINES) + ": a GPU instance or Kubernetes Job per run, messages and "
        "files through S3 (or Cloud Storage's S3 API)")),
    **{kind: (spec | None, None) for kind, spec in MACHINES.items()},  # type: ignore[dict-item]
)
