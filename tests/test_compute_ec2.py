"""Training on EC2 through Pipes: the launcher's requests go to a real EC2 API (moto on
127.0.0.1), and the instance's user data (infra/ec2/bootstrap.sh) is run here with bash, as the
instance would run it; inputs, outputs and Pipes messages cross only through S3."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import dagster as dg
import pytest
import yaml

from pipelines.config import ConfigError, FactoryConfig, load_config
from pipelines.graph import REPO_ROOT, resources_for
from resources.object_store import ArtifactMissing
from tests.test_training import FEW, materialize, metadata, write_project


def aws(service: str, endpoint: str) -> Any:
    return boto3.client(service, endpoint_url=endpoint, region_name="us-east-1")


def ec2_project(root: Path, endpoint: str) -> FactoryConfig:
    """A project training on "EC2"; the shared moto server gets a bucket and profile of its own."""
    bucket = f"staging-{uuid.uuid4().hex[:12]}"
    write_project(root, {"sft": {"base_model": "tiny", "dataset": "chat",
                                 "training": {**FEW, "checkpoint_every": 2}}})
    ec2 = aws("ec2", endpoint)
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    raw = yaml.safe_load((root / "factory.yaml").read_text())
    raw["compute"] = {"kind": "ec2", "ec2": {
        "image_id": "ami-0123456789abcdef0", "instance_type": "g5.xlarge",
        "staging_url": f"s3://{bucket}/runs", "iam_instance_profile": bucket,
        "subnet_id": subnet, "endpoint_url": endpoint, "poll_s": 0.5, "sync_s": 1,
        # the box runs the worker from this checkout's worker environment instead of docker
        "worker_command": f"env PYTHONPATH={REPO_ROOT} {REPO_ROOT}/.venvs/train/bin/python",
    }}
    (root / "factory.yaml").write_text(yaml.safe_dump(raw))
    aws("s3", endpoint).create_bucket(Bucket=bucket)
    aws("iam", endpoint).create_instance_profile(InstanceProfileName=bucket)
    return load_config(root / "factory.yaml")


class FakeInstance(threading.Thread):
    """Plays the GPU box: waits for the launcher's instance, runs its user data with bash, then
    powers off (with InstanceInitiatedShutdownBehavior=terminate: the instance terminates)."""

    def __init__(self, endpoint: str, log: Path,
                 before_boot: Callable[[], None] = lambda: None, boots: bool = True) -> None:
        super().__init__(daemon=True)
        self.ec2, self.log, self.before_boot, self.boots = aws("ec2", endpoint), log, \
            before_boot, boots
        self.instance_id: str | None = None
        self.launched: dict[str, Any] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.2):
            running = [i for r in self.ec2.describe_instances(Filters=[{
                "Name": "instance-state-name", "Values": ["pending", "running"]}])["Reservations"]
                for i in r["Instances"]]
            if running:
                break
        else:
            return
        self.launched = running[0]  # as EC2 recorded the launch request
        self.instance_id = running[0]["InstanceId"]
        if self.boots:
            script = self.log.with_suffix(".sh")
            script.write_text(base64.b64decode(self.ec2.describe_instance_attribute(
                InstanceId=self.instance_id, Attribute="userData")["UserData"]["Value"]).decode())
            self.before_boot()
            subprocess.run(["bash", str(script)], check=False, env={
                **os.environ, "FACTORY_POWEROFF": "true", "FACTORY_LOG": str(self.log)})
        self.ec2.terminate_instances(InstanceIds=[self.instance_id])


@pytest.fixture
def instance_factory(tmp_path: Path, s3_endpoint: str) -> Iterator[Callable[..., FakeInstance]]:
    started: list[FakeInstance] = []

    def start(**kwargs: Any) -> FakeInstance:
        box = FakeInstance(s3_endpoint, tmp_path / "instance.log", **kwargs)
        box.start()
        started.append(box)
        return box

    yield start
    for box in started:
        box.stop.set()
        box.join(120)


def instance_of(endpoint: str, instance_id: str) -> dict[str, Any]:
    (reservation,) = aws("ec2", endpoint).describe_instances(
        InstanceIds=[instance_id])["Reservations"]
    return reservation["Instances"][0]


def staged_keys(endpoint: str, config: FactoryConfig) -> tuple[str, list[str]]:
    assert config.compute.ec2 is not None
    bucket = config.compute.ec2.staging_url.removeprefix("s3://").split("/")[0]
    pages = aws("s3", endpoint).get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix="runs/")
    return bucket, [o["Key"] for page in pages for o in page.get("Contents", [])]


def test_an_adapter_trains_on_an_ec2_instance_through_s3(
        tmp_path: Path, s3_endpoint: str, s3_env: None,
        instance_factory: Callable[..., FakeInstance]) -> None:
    config = ec2_project(tmp_path / "project", s3_endpoint)
    materialize(config, "base_model/tiny", "dataset/chat")
    store = resources_for(config)["store"]
    base_dir = store.local_dir(store.read_ref("base_model/tiny")["prefix"])
    hidden = base_dir.with_name(base_dir.name + ".hidden")

    def hide_inputs() -> None:  # the box has only what came through S3
        base_dir.rename(hidden)

    box = instance_factory(before_boot=hide_inputs)
    instance = dg.DagsterInstance.ephemeral()
    result = materialize(config, "adapter/sft", instance=instance)
    box.join(60)
    ec2 = config.compute.ec2
    assert ec2 is not None
    assert sorted(p.name for p in base_dir.iterdir()) == sorted(p.name for p in hidden.iterdir())
    shutil.rmtree(base_dir)
    hidden.rename(base_dir)

    meta = metadata(result, "adapter/sft")
    assert meta["steps"] == FEW["max_steps"]
    assert store.is_complete(store.read_ref("adapter/sft")["prefix"])
    # what the launcher asked EC2 for, as EC2 recorded it
    assert instance_of(s3_endpoint, box.instance_id)["State"]["Name"] == "terminated"
    launched = box.launched
    assert (launched["ImageId"], launched["InstanceType"], launched["SubnetId"]) == (
        "ami-0123456789abcdef0", "g5.xlarge", ec2.subnet_id)
    assert launched["IamInstanceProfile"]["Arn"].endswith(f"/{ec2.iam_instance_profile}")
    tags = {t["Key"]: t["Value"] for t in launched["Tags"]}
    assert tags["dagster/run_id"] == result.run_id and tags["dagster/step"] == "adapter__sft"
    assert aws("ec2", s3_endpoint).describe_instance_attribute(
        InstanceId=box.instance_id, Attribute="instanceInitiatedShutdownBehavior",
    )["InstanceInitiatedShutdownBehavior"]["Value"] == "terminate"
    user_data = box.log.with_suffix(".sh").read_text()
    assert user_data.startswith("#!/bin/bash\n")
    assert "export DAGSTER_PIPES_CONTEXT=" in user_data
    assert user_data.endswith((REPO_ROOT / "infra" / "ec2" / "bootstrap.sh").read_text())
    # files and messages went through the staging bucket
    _, keys = staged_keys(s3_endpoint, config)
    assert any("/inputs/" in k and k.endswith(f"{base_dir}/config.json".lstrip("/"))
               for k in keys)
    assert any("/outputs/" in k and k.endswith("final/adapter_model.safetensors") for k in keys)
    assert any("/outputs/" in k and k.endswith("checkpoint-2/trainer_state.json") for k in keys)
    assert any(k.endswith("/messages/1.json") for k in keys)
    assert any(k.endswith("/train/done.json") for k in keys)
    # the box's Pipes logs reached the run's log, and its bootstrap log says how it ended
    logs = [e.user_message for e in instance.all_logs(result.run_id)]
    assert any("running: " in m and "axolotl train" in m for m in logs)
    assert any(m.startswith("terminated instance i-") for m in logs)
    assert "worker exited with 0" in box.log.read_text()


@pytest.mark.parametrize("failure", ["instance lost", "inputs lost"])
def test_a_failed_ec2_run_fails_the_asset_and_terminates_the_instance(
        tmp_path: Path, s3_endpoint: str, s3_env: None,
        instance_factory: Callable[..., FakeInstance], failure: str) -> None:
    config = ec2_project(tmp_path / "project", s3_endpoint)
    materialize(config, "base_model/tiny", "dataset/chat")
    s3 = aws("s3", s3_endpoint)
    store = resources_for(config)["store"]
    base_dir = store.local_dir(store.read_ref("base_model/tiny")["prefix"])
    hidden = base_dir.with_name(base_dir.name + ".hidden")

    def lose_inputs() -> None:  # neither this disk nor S3 has the base model for the box
        base_dir.rename(hidden)
        bucket, keys = staged_keys(s3_endpoint, config)
        for key in keys:
            if "/inputs/" in key:
                s3.delete_object(Bucket=bucket, Key=key)

    box = instance_factory(boots=failure != "instance lost", before_boot=lose_inputs)
    result = materialize(config, "adapter/sft", raise_on_error=False)
    box.join(60)
    if hidden.exists():
        hidden.rename(base_dir)
    assert not result.success
    (failed,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    error = failed.step_failure_data.error.message
    if failure == "instance lost":
        assert f"instance {box.instance_id} is" in error and "never finished" in error
    else:
        assert "worker.train failed on instance" in error
        assert "exited with 1" in box.log.read_text()
    assert instance_of(s3_endpoint, box.instance_id)["State"]["Name"] == "terminated"
    with pytest.raises(ArtifactMissing, match="no 'adapter/sft' has been materialized"):
        resources_for(config)["store"].read_ref("adapter/sft")


def test_ec2_compute_needs_its_settings(tmp_path: Path) -> None:
    write_project(tmp_path, {})
    raw = yaml.safe_load((tmp_path / "factory.yaml").read_text())
    raw["compute"] = {"kind": "ec2"}
    (tmp_path / "factory.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"compute\.ec2 is missing"):
        load_config(tmp_path / "factory.yaml")
    raw["compute"] = {"kind": "ec2", "ec2": {"image_id": "ami-1", "staging_url": "bucket/x"}}
    (tmp_path / "factory.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="staging_url must be s3://bucket/prefix"):
        load_config(tmp_path / "factory.yaml")
