"""Training on an EC2 GPU instance per run, through Dagster Pipes with S3 as the channel.

One run: push the job's input files to the staging prefix, launch an instance whose user data is
infra/ec2/bootstrap.sh (the Pipes context, the stage spec and the worker command exported above
it), read its Pipes messages from S3 while pulling its outputs back (checkpoints land in the
local run folder, where the adapter asset mirrors them to the object store), and terminate the
instance whatever happens: success, failure, timeout or a cancelled run. The instance also
powers itself off at the end of its bootstrap and is launched to terminate on shutdown, so a
control plane that dies does not leave a GPU billing.
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
from pydantic import Field, PrivateAttr

from resources.compute import WorkerCompute
from worker.pipes import CHANNEL_ENV
from worker.staging import Stage

BOOTSTRAP = Path(__file__).resolve().parents[1] / "infra" / "ec2" / "bootstrap.sh"
GONE = ("shutting-down", "terminated", "stopping", "stopped")
FORWARDED = ("DAGSTER_PIPES_CONTEXT", "DAGSTER_PIPES_MESSAGES", CHANNEL_ENV, "FACTORY_STAGE",
             "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION")


class StagedMessageReader(PipesS3MessageReader):
    """Pipes messages under the run's staging prefix instead of a random bucket-root key."""

    def __init__(self, stage: Stage, interval: float) -> None:
        super().__init__(bucket=stage.bucket, client=stage.client, interval=interval)
        self.key_prefix = f"{stage.prefix}/messages"

    @contextmanager
    def get_params(self) -> Iterator[dict[str, Any]]:
        with super().get_params() as params:
            yield {**params, "key_prefix": self.key_prefix}


class Ec2Compute(WorkerCompute):
    """Runs worker jobs on a fresh EC2 instance each (see pipelines/config.py Ec2Spec)."""

    region: str
    image_id: str
    instance_type: str
    worker_image: str
    staging_url: str
    subnet_id: str | None = None
    security_group_ids: list[str] = Field(default_factory=list)
    iam_instance_profile: str | None = None
    key_name: str | None = None
    volume_gib: int = 200
    endpoint_url: str | None = None
    worker_command: str | None = None
    poll_s: float = 10.0
    sync_s: float = 30.0
    max_runtime_s: int = 6 * 3600
    _clients: dict[str, Any] = PrivateAttr(default_factory=dict)

    def client(self, service: str) -> Any:
        if service not in self._clients:
            import boto3

            self._clients[service] = boto3.client(service, region_name=self.region,
                                                  endpoint_url=self.endpoint_url)
        return self._clients[service]

    def command(self) -> str:
        if self.worker_command:
            return self.worker_command
        env = " ".join(f"-e {name}" for name in FORWARDED)
        return f"docker run --rm --gpus all --network host {env} {self.worker_image} python"

    def user_data(self, env: dict[str, str]) -> str:
        exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in sorted(env.items()))
        return f"#!/bin/bash\n{exports}{BOOTSTRAP.read_text()}"

    def launch(self, context: dg.AssetExecutionContext, user_data: str) -> str:
        request: dict[str, Any] = {
            "ImageId": self.image_id, "InstanceType": self.instance_type,
            "MinCount": 1, "MaxCount": 1, "UserData": user_data,
            "InstanceInitiatedShutdownBehavior": "terminate",
            "BlockDeviceMappings": [{"DeviceName": "/dev/sda1", "Ebs": {
                "VolumeSize": self.volume_gib, "VolumeType": "gp3",
                "DeleteOnTermination": True}}],
            "TagSpecifications": [{"ResourceType": "instance", "Tags": [
                {"Key": "Name", "Value": f"adapter-factory-{context.run.run_id[:8]}"},
                {"Key": "dagster/run_id", "Value": context.run.run_id},
                {"Key": "dagster/step", "Value": context.op_execution_context.op_handle.name},
            ]}],
        }
        if self.subnet_id:
            request["SubnetId"] = self.subnet_id
        if self.security_group_ids:
            request["SecurityGroupIds"] = self.security_group_ids
        if self.iam_instance_profile:
            request["IamInstanceProfile"] = {"Name": self.iam_instance_profile}
        if self.key_name:
            request["KeyName"] = self.key_name
        (instance,) = self.client("ec2").run_instances(**request)["Instances"]
        return instance["InstanceId"]

    def state(self, instance_id: str) -> str:
        (reservation,) = self.client("ec2").describe_instances(
            InstanceIds=[instance_id])["Reservations"]
        return reservation["Instances"][0]["State"]["Name"]

    def wait(self, context: dg.AssetExecutionContext, instance_id: str, stage: Stage
             ) -> dict[str, Any]:
        """Until the box says it is done; outputs are pulled back on every poll."""
        deadline = time.monotonic() + self.max_runtime_s
        while True:
            pulled = stage.pull("outputs")
            if pulled:
                context.log.debug(f"pulled {pulled} output files from {stage.url}")
            if (done := stage.done()) is not None:
                stage.pull("outputs")
                return done
            state = self.state(instance_id)
            if state in GONE:
                raise dg.Failure(f"instance {instance_id} is {state} and its worker never "
                                 f"finished; its log is /var/log/adapter-factory-worker.log")
            if time.monotonic() > deadline:
                raise dg.Failure(f"instance {instance_id} ran past {self.max_runtime_s} s")
            time.sleep(self.poll_s)

    def run(self, context: dg.AssetExecutionContext, job: str, extras: dict[str, Any],
            inputs: Sequence[Path] = (), outputs: Sequence[Path] = ()) -> list[Any]:
        step = context.op_execution_context.op_handle.name
        stage = Stage.at(f"{self.staging_url}/{context.run.run_id}/{step}/"
                         f"{context.retry_number}/{job}", client=self.client("s3"))
        pushed = stage.push("inputs", inputs)
        context.log.info(f"staged {pushed} input files at {stage.url}")
        with dg.open_pipes_session(context=context, extras=extras,
                                   context_injector=dg.PipesEnvContextInjector(),
                                   message_reader=StagedMessageReader(stage, self.poll_s)
                                   ) as session:
            env = {**session.get_bootstrap_env_vars(), CHANNEL_ENV: "s3",
                   "AWS_DEFAULT_REGION": self.region,
                   "FACTORY_WORKER_COMMAND": self.command(),
                   "FACTORY_STAGE": json.dumps({"job": job, "url": stage.url,
                                                "outputs": [str(p) for p in outputs],
                                                "sync_s": self.sync_s})}
            if self.endpoint_url:
                env["AWS_ENDPOINT_URL_S3"] = self.endpoint_url
            instance_id = self.launch(context, self.user_data(env))
            context.log.info(f"launched {self.instance_type} instance {instance_id} "
                             f"({self.image_id}) for worker.{job}")
            try:
                done = self.wait(context, instance_id, stage)
            finally:
                self.client("ec2").terminate_instances(InstanceIds=[instance_id])
                context.log.info(f"terminated instance {instance_id}")
        if done["exit_code"] != 0:
            raise dg.Failure(f"worker.{job} failed on instance {instance_id}",
                             metadata={"error": done["error"] or "", "staging": stage.url})
        return list(session.get_custom_messages())
