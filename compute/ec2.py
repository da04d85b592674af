"""An EC2 GPU instance per training job: its settings and its launcher (boto3).

The instance's user data is infra/remote/bootstrap.sh with the job's environment exported above.
It powers itself off at the end of its bootstrap and is launched to terminate on shutdown, so a
control plane that dies does not leave a GPU billing; the launcher terminates it as well.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from compute.gpus import GpuBox, ec2_box
from compute.machine import Job, Launcher, RemoteSpec, bootstrap_script

GONE = ("shutting-down", "terminated", "stopping", "stopped")


class Ec2Launcher(Launcher):
    spec: Ec2Spec

    def launch(self, job: Job) -> str:
        spec = self.spec
        request: dict[str, Any] = {
            "ImageId": spec.image_id, "InstanceType": spec.instance_type,
            "MinCount": 1, "MaxCount": 1,
            "UserData": bootstrap_script(job.env, spec.worker_command, spec.worker_image),
            "InstanceInitiatedShutdownBehavior": "terminate",
            "BlockDeviceMappings": [{"DeviceName": "/dev/sda1", "Ebs": {
                "VolumeSize": spec.volume_gib, "VolumeType": "gp3",
                "DeleteOnTermination": True}}],
            "TagSpecifications": [{"ResourceType": "instance", "Tags": [
                {"Key": "Name", "Value": f"adapter-factory-{job.name}-{job.run_id[:8]}"},
                {"Key": "dagster/run_id", "Value": job.run_id},
                {"Key": "dagster/step", "Value": job.step},
            ]}],
        }
        if spec.subnet_id:
            request["SubnetId"] = spec.subnet_id
        if spec.security_group_ids:
            request["SecurityGroupIds"] = spec.security_group_ids
        if spec.iam_instance_profile:
            request["IamInstanceProfile"] = {"Name": spec.iam_instance_profile}
        if spec.key_name:
            request["KeyName"] = spec.key_name
        (instance,) = self.aws("ec2").run_instances(**request)["Instances"]
        return f"instance {instance['InstanceId']}"

    def gone(self, machine: str) -> str | None:
        (reservation,) = self.aws("ec2").describe_instances(
            InstanceIds=[machine.split()[-1]])["Reservations"]
        state = reservation["Instances"][0]["State"]["Name"]
        return f"is {state} (its log: /var/log/adapter-factory-worker.log)" \
            if state in GONE else None

    def release(self, machine: str) -> None:
        self.aws("ec2").terminate_instances(InstanceIds=[machine.split()[-1]])


class Ec2Spec(RemoteSpec):
    """A GPU instance per training job, launched with boto3 and terminated when it ends."""

    kind = "ec2"
    launcher = Ec2Launcher

    image_id: str = Field(description="an AMI with Docker and the NVIDIA container toolkit "
                                      "(e.g. the AWS Deep Learning Base GPU AMI)")
    instance_type: str = "g5.xlarge"
    subnet_id: str | None = None
    security_group_ids: list[str] = Field(default_factory=list)
    iam_instance_profile: str | None = Field(
        None, description="instance profile name; its role must read and write staging_url")
    key_name: str | None = None
    volume_gib: int = Field(200, ge=20)
    worker_command: str | None = Field(
        None, description="what runs `-m worker.remote` on the box; default: docker run of "
                          "worker_image with the GPUs")

    def gpu_box(self) -> GpuBox | None:
        return ec2_box(self.instance_type)
