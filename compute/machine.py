"""What every kind of training box shares: its settings' common part (the worker image and the S3
staging channel), the job it is asked to run, and the three things a launcher does.

Dagster-free on purpose: `config/` validates these settings (the gateway and the CLI load the
config without Dagster), and resources/remote_compute.py runs the Pipes and staging part around
whichever launcher `compute.kind` names.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from compute.gpus import GpuBox

BOOTSTRAP = Path(__file__).resolve().parents[1] / "infra" / "remote" / "bootstrap.sh"
# Checksums only where S3 requires them: Cloud Storage's XML API rejects the newer defaults.
CHECKSUMS = {"AWS_REQUEST_CHECKSUM_CALCULATION": "when_required",
             "AWS_RESPONSE_CHECKSUM_VALIDATION": "when_required"}
# what a `docker run` of the worker image passes through from the bootstrap's exports (and
# worker.pipes.CHANNEL_ENV, imported where the script is rendered)
FORWARDED = ("DAGSTER_PIPES_CONTEXT", "DAGSTER_PIPES_MESSAGES", "FACTORY_STAGE",
             "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID",
             "AWS_SECRET_ACCESS_KEY", *CHECKSUMS)


class LaunchError(RuntimeError):
    """A cloud API refused to start, watch or stop a box; the message says which call and why."""


@dataclass(frozen=True)
class Job:
    """One worker job to start on a fresh box: `python -m worker.<name>` with `env` (the Pipes
    context, the stage spec), for one attempt of one step of one Dagster run."""

    name: str
    run_id: str
    step: str
    attempt: int
    env: dict[str, str]
    max_runtime_s: int


class Launcher:
    """Starts, watches and releases one kind of box. Machine ids are strings a person can
    read in the run's log ("instance i-0abc", "job training/factory-train-...")."""

    def __init__(self, spec: Any) -> None:
        self.spec = spec
        self._clients: dict[str, Any] = {}

    def launch(self, job: Job) -> str:
        """Start a box running `job`; returns its machine id."""
        raise NotImplementedError

    def gone(self, machine: str) -> str | None:
        """Why the box can no longer finish its job (None while it can)."""
        raise NotImplementedError

    def release(self, machine: str) -> None:
        """Stop and delete the box; one already gone is not an error."""
        raise NotImplementedError

    def aws(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = self.spec.aws(service)
        return self._clients[service]


class RemoteSpec(BaseModel):
    """What every remote machine shares: the worker image and the S3 staging channel. A kind
    of machine subclasses this with its own settings, its `kind` and its `launcher`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: ClassVar[str]
    launcher: ClassVar[type[Launcher]]

    staging_url: str = Field(description="s3://bucket/prefix: inputs, outputs and Pipes "
                                         "messages of each job")
    worker_image: str = Field(
        "adapter-factory-worker:latest",
        description="infra/docker/worker.Dockerfile, pushed where the machine can pull it")
    region: str = "us-east-1"
    endpoint_url: str | None = Field(None, description="AWS API endpoint override "
                                                       "(S3-compatible servers, tests)")
    poll_s: float = Field(10.0, gt=0)
    sync_s: float = Field(30.0, gt=0, description="how often the box pushes its outputs "
                                                  "(checkpoints) to S3")

    @field_validator("staging_url")
    @classmethod
    def _s3(cls, url: str) -> str:
        if not url.startswith("s3://") or len(url) <= len("s3://"):
            raise ValueError(f"staging_url must be s3://bucket/prefix, got {url!r}")
        return url.rstrip("/")

    def gpu_box(self) -> GpuBox | None:
        """The GPUs this kind of machine has, as far as its settings say; None when they do
        not name a card (then `compute.gpu` must)."""
        return None

    def aws(self, service: str) -> Any:
        """A boto3 client for this spec's region and endpoint (S3 checksums only where
        required, as Cloud Storage's XML API needs)."""
        import boto3
        from botocore.config import Config

        return boto3.client(service, region_name=self.region, endpoint_url=self.endpoint_url,
                            config=Config(request_checksum_calculation="when_required",
                                          response_checksum_validation="when_required"))


def bootstrap_script(env: dict[str, str], worker_command: str | None, worker_image: str) -> str:
    """infra/remote/bootstrap.sh with the job's environment exported above it: what a virtual
    machine runs at boot (EC2 user data, Compute Engine startup-script). Without a
    `worker_command` the box runs the worker image with its GPUs."""
    from worker.pipes import CHANNEL_ENV

    command = worker_command or (
        f"docker run --rm --gpus all --network host "
        f"{' '.join(f'-e {name}' for name in (*FORWARDED, CHANNEL_ENV))} {worker_image} python")
    env = {**env, "FACTORY_WORKER_COMMAND": command}
    exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in sorted(env.items()))
    return f"#!/bin/bash\n{exports}{BOOTSTRAP.read_text()}"
