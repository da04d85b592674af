"""An EC2 GPU instance per training job (resources/remote_compute.py does the Pipes and S3 part).

The instance's user data is infra/remote/bootstrap.sh with the job's environment exported above.
It powers itself off at the end of its bootstrap and is launched to terminate on shutdown, so a
control plane that dies does not leave a GPU billing; the launcher terminates it as well.
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from resources.remote_compute import RemoteCompute

GONE = ("shutting-down", "terminated", "stopping", "stopped")


class Ec2Compute(RemoteCompute):
    """Runs worker jobs on a fresh EC2 instance each (see config/schema.py Ec2Spec)."""

    # no defaults here: Ec2Spec's are the only ones (training_compute passes every field)
    image_id: str
    instance_type: str
    subnet_id: str | None
    security_group_ids: list[str]
    iam_instance_profile: str | None
    key_name: str | None
    volume_gib: int

    def launch(self, context: dg.AssetExecutionContext, job: str, env: dict[str, str]) -> str:
        request: dict[str, Any] = {
            "ImageId": self.image_id, "InstanceType": self.instance_type,
            "MinCount": 1, "MaxCount": 1, "UserData": self.bootstrap_script(env),
            "InstanceInitiatedShutdownBehavior": "terminate",
            "BlockDeviceMappings": [{"DeviceName": "/dev/sda1", "Ebs": {
                "VolumeSize": self.volume_gib, "VolumeType": "gp3",
                "DeleteOnTermination": True}}],
            "TagSpecifications": [{"ResourceType": "instance", "Tags": [
                {"Key": "Name", "Value": f"adapter-factory-{job}-{context.run.run_id[:8]}"},
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
