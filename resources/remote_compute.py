"""Worker jobs on a machine of their own (an EC2 or Compute Engine instance, a Kubernetes Job),
through Dagster Pipes with S3 as the only channel.

One job: push its input files to a staging prefix, start the machine with the Pipes context and
the stage spec in its environment, read its Pipes messages from S3 while pulling its finished
checkpoints back (into the local run folder, where the adapter asset mirrors them to the object
store), release the machine whatever happens (success, failure, timeout or a cancelled run) and
then pull the rest of its outputs. The box runs `python -m worker.remote` (worker/remote.py).
How a kind of machine is started, watched and released is its launcher's, in compute/.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import dagster as dg
from dagster_aws.pipes import PipesS3MessageReader
from pydantic import PrivateAttr

from compute import MACHINES
from compute.machine import CHECKSUMS, Job, Launcher, RemoteSpec
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


class RemoteCompute(WorkerCompute):
    """Runs worker jobs on a fresh box each, of the kind `kind` names in compute.MACHINES with
    `settings`: that kind's spec as factory.yaml gave it, in JSON (Dagster's config types hold
    no None inside a mapping, and a None may be meant, as in a CPU-only `accelerator`)."""

    launches_a_machine: ClassVar[bool] = True
    kind: str
    settings: str
    max_runtime_s: int
    _launcher: Launcher | None = PrivateAttr(None)

    @property
    def spec(self) -> RemoteSpec:
        return self.launcher.spec

    @property
    def launcher(self) -> Launcher:
        if self._launcher is None:
            spec = MACHINES[self.kind].model_validate_json(self.settings)
            self._launcher = spec.launcher(spec)
        return self._launcher

    def wait(self, machine: str, stage: Stage) -> dict[str, Any]:
        """Until the box says it is done. Finished checkpoints come back on every poll (the
        adapter asset mirrors them to the object store while the box still trains)."""
        deadline = time.monotonic() + self.max_runtime_s
        while True:
            stage.pull("outputs", finished_only=True)
            if (done := stage.done()) is not None:
                return done
            if (reason := self.launcher.gone(machine)) is not None:
                raise dg.Failure(f"{machine} {reason} and its worker never finished")
            if time.monotonic() > deadline:
                raise dg.Failure(f"{machine} ran past {self.max_runtime_s} s")
            time.sleep(self.spec.poll_s)

    def run(self, context: dg.AssetExecutionContext, job: str, extras: dict[str, Any],
            inputs: Sequence[Path] = (), outputs: Sequence[Path] = (),
            secrets: Mapping[str, str] | None = None) -> list[Any]:
        if secrets:  # a box's environment is readable in its launch request (user data, Job)
            raise ValueError(f"worker.{job} needs {sorted(secrets)}, which a remote box is not "
                             "given; run it on the local worker")
        step = context.op_execution_context.op_handle.name
        spec = self.spec
        stage = Stage.at(f"{spec.staging_url}/{context.run.run_id}/{step}/"
                         f"{context.retry_number}/{job}", client=self.launcher.aws("s3"))
        pushed = stage.push("inputs", inputs)
        context.log.info(f"staged {pushed} input files at {stage.url}")
        with dg.open_pipes_session(context=context, extras=extras,
                                   context_injector=dg.PipesEnvContextInjector(),
                                   message_reader=StagedMessageReader(stage, spec.poll_s)
                                   ) as session:
            env = {**session.get_bootstrap_env_vars(), **CHECKSUMS, **self.kernel_env,
                   CHANNEL_ENV: "s3",
                   "AWS_DEFAULT_REGION": spec.region,
                   "FACTORY_STAGE": json.dumps({"job": job, "url": stage.url,
                                                "outputs": [str(p) for p in outputs],
                                                "sync_s": spec.sync_s})}
            if spec.endpoint_url:
                env["AWS_ENDPOINT_URL_S3"] = spec.endpoint_url
            machine = self.launcher.launch(Job(
                name=job, run_id=context.run.run_id, step=step, attempt=context.retry_number,
                env=env, max_runtime_s=self.max_runtime_s))
            context.log.info(f"launched {machine} for worker.{job}")
            try:
                done = self.wait(machine, stage)
            finally:
                self.launcher.release(machine)
                context.log.info(f"released {machine}")
                # whatever the box left, the whole of it once it can no longer write
                stage.pull("outputs")
        if done["exit_code"] != 0:
            raise dg.Failure(f"worker.{job} failed on {machine}: {done['error'] or 'no reason'}",
                             metadata={"error": done["error"] or "", "staging": stage.url})
        return list(session.get_custom_messages())
