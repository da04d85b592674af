"""Worker jobs on a machine of their own (an EC2 instance, a Kubernetes Job), through Dagster
Pipes with S3 as the only channel.

One job: push its input files to a staging prefix, start the machine with the Pipes context and
the stage spec in its environment, read its Pipes messages from S3 while pulling its outputs
back (checkpoints land in the local run folder, where the adapter asset mirrors them to the
object store), and release the machine whatever happens: success, failure, timeout or a
cancelled run. The box runs `python -m worker.remote` (worker/remote.py). What differs per
kind of machine is only how it is started, watched and released (`launch`, `gone`, `release`).
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_aws.pipes import PipesS3MessageReader
from pydantic import PrivateAttr

from resources.compute import WorkerCompute
from worker.pipes import CHANNEL_ENV
from worker.staging import Stage


class StagedMessageReader(PipesS3MessageReader):
    """Pipes messages under the job's staging prefix instead of a random bucket-root key."""

    def __init__(self, stage: Stage, interval: float) -> None:
        super().__init__(bucket=stage.bucket, client=stage.client, interval=interval)
        self.key_prefix = f"{stage.prefix}/messages"

    @contextmanager
    def get_params(self) -> Iterator[dict[str, Any]]:
        with super().get_params() as params:
            yield {**params, "key_prefix": self.key_prefix}


BOOTSTRAP = Path(__file__).resolve().parents[1] / "infra" / "remote" / "bootstrap.sh"
# Checksums only where S3 requires them: Cloud Storage's XML API rejects the newer defaults.
CHECKSUMS = {"AWS_REQUEST_CHECKSUM_CALCULATION": "when_required",
             "AWS_RESPONSE_CHECKSUM_VALIDATION": "when_required"}
FORWARDED = ("DAGSTER_PIPES_CONTEXT", "DAGSTER_PIPES_MESSAGES", CHANNEL_ENV, "FACTORY_STAGE",
             "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID",
             "AWS_SECRET_ACCESS_KEY", *CHECKSUMS)


class RemoteCompute(WorkerCompute):
    # RemoteSpec's defaults are the only ones (training_compute passes every field);
    # worker_command is None for Kubernetes, whose spec has none
    staging_url: str
    worker_image: str
    region: str
    endpoint_url: str | None
    worker_command: str | None = None
    poll_s: float
    sync_s: float
    max_runtime_s: int
    _clients: dict[str, Any] = PrivateAttr(default_factory=dict)

    def aws(self, service: str) -> Any:
        if service not in self._clients:
            import boto3
            from botocore.config import Config

            self._clients[service] = boto3.client(
                service, region_name=self.region, endpoint_url=self.endpoint_url,
                config=Config(request_checksum_calculation="when_required",
                              response_checksum_validation="when_required"))
        return self._clients[service]

    def bootstrap_script(self, env: dict[str, str]) -> str:
        """infra/remote/bootstrap.sh with the job's environment exported above it: what a
        virtual machine runs at boot (EC2 user data, Compute Engine startup-script)."""
        command = self.worker_command or (
            f"docker run --rm --gpus all --network host "
            f"{' '.join(f'-e {name}' for name in FORWARDED)} {self.worker_image} python")
        env = {**env, "FACTORY_WORKER_COMMAND": command}
        exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in sorted(env.items()))
        return f"#!/bin/bash\n{exports}{BOOTSTRAP.read_text()}"

    # -- what a kind of machine implements --------------------------------------------------
    def launch(self, context: dg.AssetExecutionContext, job: str, env: dict[str, str]) -> str:
        """Start the machine with `env`; returns its id."""
        raise NotImplementedError

    def gone(self, machine: str) -> str | None:
        """Why the machine can no longer finish the job (None while it can)."""
        raise NotImplementedError

    def release(self, machine: str) -> None:
        raise NotImplementedError

    # -- one mechanism for all of them -------------------------------------------------------
    def wait(self, machine: str, stage: Stage) -> dict[str, Any]:
        """Until the box says it is done; outputs are pulled back on every poll."""
        deadline = time.monotonic() + self.max_runtime_s
        while True:
            stage.pull("outputs")
            if (done := stage.done()) is not None:
                stage.pull("outputs")
                return done
            if (reason := self.gone(machine)) is not None:
                raise dg.Failure(f"{machine} {reason} and its worker never finished")
            if time.monotonic() > deadline:
                raise dg.Failure(f"{machine} ran past {self.max_runtime_s} s")
            time.sleep(self.poll_s)

    def run(self, context: dg.AssetExecutionContext, job: str, extras: dict[str, Any],
            inputs: Sequence[Path] = (), outputs: Sequence[Path] = ()) -> list[Any]:
        step = context.op_execution_context.op_handle.name
        stage = Stage.at(f"{self.staging_url}/{context.run.run_id}/{step}/"
                         f"{context.retry_number}/{job}", client=self.aws("s3"))
        pushed = stage.push("inputs", inputs)
        context.log.info(f"staged {pushed} input files at {stage.url}")
        with dg.open_pipes_session(context=context, extras=extras,
                                   context_injector=dg.PipesEnvContextInjector(),
                                   message_reader=StagedMessageReader(stage, self.poll_s)
                                   ) as session:
            env = {**session.get_bootstrap_env_vars(), **CHECKSUMS, CHANNEL_ENV: "s3",
                   "AWS_DEFAULT_REGION": self.region,
                   "FACTORY_STAGE": json.dumps({"job": job, "url": stage.url,
                                                "outputs": [str(p) for p in outputs],
                                                "sync_s": self.sync_s})}
            if self.endpoint_url:
                env["AWS_ENDPOINT_URL_S3"] = self.endpoint_url
            machine = self.launch(context, job, env)
            context.log.info(f"launched {machine} for worker.{job}")
            try:
                done = self.wait(machine, stage)
            finally:
                self.release(machine)
                context.log.info(f"released {machine}")
        if done["exit_code"] != 0:
            raise dg.Failure(f"worker.{job} failed on {machine}",
                             metadata={"error": done["error"] or "", "staging": stage.url})
        return list(session.get_custom_messages())
