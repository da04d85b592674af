"""Training on remote machines through Pipes, with S3 (moto on 127.0.0.1) as the only channel.

EC2: the launcher's requests go to moto's EC2 API and the instance's user data
(infra/remote/bootstrap.sh) is run here with bash, as the instance would run it. Kubernetes and
Compute Engine cannot run here: recording stand-ins for the few API endpoints the launchers use
run the Job's container command / the VM's startup-script with this checkout's worker
environment, and the tests check the requests the launchers sent. In all, the box finds the base
model only in S3, not on this disk.
"""

from __future__ import annotations

import base64
import os
import re
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

from config.loading import ConfigError, load_config
from config.schema import FactoryConfig
from pipelines.graph import REPO_ROOT, resources_for
from store.backends import ArtifactMissing
from tests.support.recording_api import RecordingServer
from tests.support.training import FEW, materialize, metadata, write_project

WORKER_PYTHON = f"{REPO_ROOT}/.venvs/train/bin/python"


def aws(service: str, endpoint: str) -> Any:
    return boto3.client(service, endpoint_url=endpoint, region_name="us-east-1")


def remote_project(root: Path, endpoint: str, kind: str, settings: dict[str, Any]
                   ) -> FactoryConfig:
    """A project training on `kind`; the shared moto server gets a bucket of its own."""
    bucket = f"staging-{uuid.uuid4().hex[:12]}"
    aws("s3", endpoint).create_bucket(Bucket=bucket)
    write_project(root, {"sft": {"base_model": "tiny", "dataset": "chat",
                                 "training": {**FEW, "checkpoint_every": 2}}})
    raw = yaml.safe_load((root / "factory.yaml").read_text())
    raw["compute"] = {"kind": kind, kind: {
        "staging_url": f"s3://{bucket}/runs", "endpoint_url": endpoint, "poll_s": 0.5,
        "sync_s": 1, **settings}}
    (root / "factory.yaml").write_text(yaml.safe_dump(raw))
    config = load_config(root / "factory.yaml")
    materialize(config, "base_model/tiny", "dataset/chat")
    return config


def staged_keys(endpoint: str, config: FactoryConfig) -> tuple[str, list[str]]:
    settings = getattr(config.compute, config.compute.kind)
    bucket = settings.staging_url.removeprefix("s3://").split("/")[0]
    pages = aws("s3", endpoint).get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix="runs/")
    return bucket, [o["Key"] for page in pages for o in page.get("Contents", [])]


class BaseModelAway:
    """Moves the base model off this disk while the box starts, so it can only come from S3;
    `lose_staged` also deletes the staged copy (the box then has no inputs at all)."""

    def __init__(self, config: FactoryConfig, endpoint: str, lose_staged: bool = False) -> None:
        store = resources_for(config)["store"]
        self.path = store.local_dir(store.read_ref("base_model/tiny")["prefix"])
        self.away = self.path.with_name(self.path.name + ".away")
        self.config, self.endpoint, self.lose_staged = config, endpoint, lose_staged

    def __call__(self) -> None:
        self.path.rename(self.away)
        if self.lose_staged:
            bucket, keys = staged_keys(self.endpoint, self.config)
            for key in (k for k in keys if "/inputs/" in k):
                aws("s3", self.endpoint).delete_object(Bucket=bucket, Key=key)

    def restore(self) -> list[str]:
        """Puts the original back; returns the names of what the box had downloaded."""
        fetched = sorted(p.name for p in self.path.iterdir()) if self.path.exists() else []
        shutil.rmtree(self.path, ignore_errors=True)
        if self.away.exists():
            self.away.rename(self.path)
        return fetched


def assert_trained_through_s3(config: FactoryConfig, result: Any, endpoint: str,
                              instance: dg.DagsterInstance, fetched: list[str]) -> None:
    store = resources_for(config)["store"]
    assert fetched == sorted(p.name for p in store.local_dir(
        store.read_ref("base_model/tiny")["prefix"]).iterdir())
    assert metadata(result, "adapter/sft")["steps"] == FEW["max_steps"]
    assert store.is_complete(store.read_ref("adapter/sft")["prefix"])
    _, keys = staged_keys(endpoint, config)
    assert any("/inputs/" in k and k.endswith("/config.json") for k in keys)
    assert any("/outputs/" in k and k.endswith("final/adapter_model.safetensors") for k in keys)
    assert any("/outputs/" in k and k.endswith("checkpoint-2/trainer_state.json") for k in keys)
    assert any(k.endswith("/messages/1.json") for k in keys)
    assert any(k.endswith("/train/done.json") for k in keys)
    logs = [e.user_message for e in instance.all_logs(result.run_id)]
    assert any("running: " in m and "axolotl train" in m for m in logs)  # relayed over Pipes
    assert any(m.startswith("released ") for m in logs)


def failure_of(result: Any) -> str:
    assert not result.success
    (failed,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    return failed.step_failure_data.error.message


# -- EC2 --------------------------------------------------------------------------------------
class FakeInstance(threading.Thread):
    """Plays the GPU box: waits for the launcher's instance, runs its user data with bash, then
    powers off (with InstanceInitiatedShutdownBehavior=terminate: the instance terminates)."""

    def __init__(self, endpoint: str, log: Path, before_boot: Callable[[], None],
                 boots: bool) -> None:
        super().__init__(daemon=True)
        self.ec2, self.log = aws("ec2", endpoint), log
        self.before_boot, self.boots = before_boot, boots
        self.instance_id = ""
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

    def state(self) -> str:
        (reservation,) = self.ec2.describe_instances(
            InstanceIds=[self.instance_id])["Reservations"]
        return reservation["Instances"][0]["State"]["Name"]


@pytest.fixture
def ec2_box(tmp_path: Path, s3_endpoint: str) -> Iterator[Callable[..., FakeInstance]]:
    started: list[FakeInstance] = []

    def start(before_boot: Callable[[], None], boots: bool = True) -> FakeInstance:
        box = FakeInstance(s3_endpoint, tmp_path / "instance.log", before_boot, boots)
        box.start()
        started.append(box)
        return box

    yield start
    for box in started:
        box.stop.set()
        box.join(120)


def ec2_project(root: Path, endpoint: str) -> FactoryConfig:
    ec2 = aws("ec2", endpoint)
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    profile = f"worker-{uuid.uuid4().hex[:8]}"
    aws("iam", endpoint).create_instance_profile(InstanceProfileName=profile)
    return remote_project(root, endpoint, "ec2", {
        "image_id": "ami-0123456789abcdef0", "instance_type": "g5.xlarge",
        "iam_instance_profile": profile, "subnet_id": subnet,
        # the box runs the worker from this checkout's worker environment instead of docker
        "worker_command": f"env PYTHONPATH={REPO_ROOT} {WORKER_PYTHON}",
    })


@pytest.mark.slow
def test_an_adapter_trains_on_an_ec2_instance_through_s3(
        tmp_path: Path, s3_endpoint: str, s3_env: None,
        ec2_box: Callable[..., FakeInstance]) -> None:
    config = ec2_project(tmp_path / "project", s3_endpoint)
    away = BaseModelAway(config, s3_endpoint)
    box = ec2_box(before_boot=away)
    instance = dg.DagsterInstance.ephemeral()
    result = materialize(config, "adapter/sft", instance=instance)
    box.join(60)
    assert_trained_through_s3(config, result, s3_endpoint, instance, away.restore())

    settings = config.compute.ec2
    assert settings is not None
    assert box.state() == "terminated"
    launched = box.launched
    assert (launched["ImageId"], launched["InstanceType"], launched["SubnetId"]) == (
        "ami-0123456789abcdef0", "g5.xlarge", settings.subnet_id)
    assert launched["IamInstanceProfile"]["Arn"].endswith(f"/{settings.iam_instance_profile}")
    tags = {t["Key"]: t["Value"] for t in launched["Tags"]}
    assert tags["dagster/run_id"] == result.run_id and tags["dagster/step"] == "adapter__sft"
    assert aws("ec2", s3_endpoint).describe_instance_attribute(
        InstanceId=box.instance_id, Attribute="instanceInitiatedShutdownBehavior",
    )["InstanceInitiatedShutdownBehavior"]["Value"] == "terminate"
    user_data = box.log.with_suffix(".sh").read_text()
    assert user_data.startswith("#!/bin/bash\n")
    assert "export DAGSTER_PIPES_CONTEXT=" in user_data
    assert user_data.endswith((REPO_ROOT / "infra" / "remote" / "bootstrap.sh").read_text())
    assert "worker exited with 0" in box.log.read_text()


@pytest.mark.slow
@pytest.mark.parametrize("failure", ["instance lost", "inputs lost"])
def test_a_failed_ec2_run_fails_the_asset_and_terminates_the_instance(
        tmp_path: Path, s3_endpoint: str, s3_env: None,
        ec2_box: Callable[..., FakeInstance], failure: str) -> None:
    config = ec2_project(tmp_path / "project", s3_endpoint)
    away = BaseModelAway(config, s3_endpoint, lose_staged=True)
    box = ec2_box(before_boot=away, boots=failure != "instance lost")
    result = materialize(config, "adapter/sft", raise_on_error=False)
    box.join(60)
    away.restore()
    error = failure_of(result)
    if failure == "instance lost":
        assert f"instance {box.instance_id} is" in error and "never finished" in error
    else:
        assert f"worker.train failed on instance {box.instance_id}" in error
        # the box's own last words: what it could not find
        assert "its last lines:" in error and "OSError" in error and "base_model/tiny" in error
        assert "worker exited with 1" in box.log.read_text()
    assert box.state() == "terminated"
    with pytest.raises(ArtifactMissing, match="no 'adapter/sft' has been materialized"):
        resources_for(config)["store"].read_ref("adapter/sft")


# -- recorded cloud APIs ----------------------------------------------------------------------
class RecordingApi(RecordingServer):
    """A cloud API's few endpoints that a launcher uses: a created machine runs here (`boot`
    says how) until it ends or is deleted."""

    def __init__(self, runs: bool = True) -> None:
        super().__init__()
        self.runs = runs
        self.before_boot: Callable[[], None] = lambda: None
        self.machines: dict[str, dict[str, Any]] = {}
        self.workers: list[threading.Thread] = []

    def create(self, name: str, resource: dict[str, Any], boot: Callable[[], int],
               running: dict[str, Any], ended: Callable[[int], dict[str, Any]]) -> None:
        self.machines[name] = {**resource, **running}

        def machine() -> None:
            code = 137  # evicted / preempted before its worker started
            if self.runs:
                self.before_boot()
                code = boot()
            if name in self.machines:  # not deleted meanwhile
                self.machines[name].update(ended(code))

        self.workers.append(threading.Thread(target=machine, daemon=True))
        self.workers[-1].start()


def crud(api: RecordingApi, method: str, name: str | None, body: Any,
         created: Callable[[dict[str, Any]], str]) -> tuple[int, dict[str, Any]]:
    """POST to the collection creates; GET / DELETE an item; 404 for what is not there."""
    if method == "POST" and name is None:
        return 200, {"name": created(body)}
    if name not in api.machines:
        return 404, {"error": {"code": 404, "message": "not found"}}
    if method == "DELETE":
        api.machines.pop(name)
        return 200, {"status": "Success"}
    return 200, api.machines[name]


class FakeKubernetes(RecordingApi):
    """batch/v1 Jobs; a Job's container command runs with this checkout's worker python."""

    JOB = re.compile(r"^/apis/batch/v1/namespaces/([^/]+)/jobs(?:/([^/]+))?(?:/status)?$")

    def route(self, method: str, path: str, body: Any) -> tuple[int, dict[str, Any]]:
        match = self.JOB.match(path)
        if match is None:
            return 404, {}
        return crud(self, method, match.group(2), body, self.create_job)

    def create_job(self, body: dict[str, Any]) -> str:
        (container,) = body["spec"]["template"]["spec"]["containers"]
        env = {**os.environ, **{e["name"]: e["value"] for e in container["env"]},
               "PYTHONPATH": str(REPO_ROOT)}
        command = [WORKER_PYTHON if part == "python" else part for part in container["command"]]
        self.create(body["metadata"]["name"], body,
                    boot=lambda: subprocess.run(command, env=env, check=False).returncode,
                    running={"status": {"active": 1}},
                    ended=lambda code: {"status": {"succeeded": 1} if code == 0
                                        else {"failed": 1}})
        return body["metadata"]["name"]


class FakeComputeEngine(RecordingApi):
    """compute/v1 instances; an instance runs its startup-script with bash, then is TERMINATED
    (powered off), as a Compute Engine VM would."""

    INSTANCE = re.compile(r"^/compute/v1/projects/([^/]+)/zones/([^/]+)/instances(?:/([^/]+))?$")

    def __init__(self, log: Path, runs: bool = True) -> None:
        super().__init__(runs)
        self.log = log

    def route(self, method: str, path: str, body: Any) -> tuple[int, dict[str, Any]]:
        match = self.INSTANCE.match(path)
        if match is None:
            return 404, {}
        return crud(self, method, match.group(3), body, self.create_instance)

    def create_instance(self, body: dict[str, Any]) -> str:
        script = self.log.with_suffix(".sh")
        script.write_text({i["key"]: i["value"] for i in body["metadata"]["items"]}[
            "startup-script"])
        env = {**os.environ, "FACTORY_POWEROFF": "true", "FACTORY_LOG": str(self.log)}
        self.create(body["name"], body,
                    boot=lambda: subprocess.run(["bash", str(script)], env=env,
                                                check=False).returncode,
                    running={"status": "RUNNING"}, ended=lambda _: {"status": "TERMINATED"})
        return body["name"]


@pytest.fixture
def recorded() -> Iterator[Callable[[RecordingApi], RecordingApi]]:
    started: list[RecordingApi] = []

    def start(api: RecordingApi) -> RecordingApi:
        threading.Thread(target=api.serve_forever, daemon=True).start()
        started.append(api)
        return api

    yield start
    for api in started:
        for worker in api.workers:
            worker.join(120)
        api.shutdown()


# -- Kubernetes -------------------------------------------------------------------------------
def k8s_project(root: Path, endpoint: str, api: RecordingApi) -> FactoryConfig:
    return remote_project(root, endpoint, "k8s", {
        "api_url": api.url, "namespace": "training", "gpus": 1,
        "worker_image": "registry.example.com/adapter-factory-worker:1",
        "service_account": "factory-worker", "node_selector": {"gpu": "a10g"}})


@pytest.mark.slow
def test_an_adapter_trains_as_a_kubernetes_job_through_s3(
        tmp_path: Path, s3_endpoint: str, s3_env: None,
        recorded: Callable[[RecordingApi], RecordingApi]) -> None:
    api = recorded(FakeKubernetes())
    config = k8s_project(tmp_path / "project", s3_endpoint, api)
    api.before_boot = away = BaseModelAway(config, s3_endpoint)
    instance = dg.DagsterInstance.ephemeral()
    result = materialize(config, "adapter/sft", instance=instance)
    for worker in api.workers:
        worker.join(60)
    assert_trained_through_s3(config, result, s3_endpoint, instance, away.restore())

    (create,) = [(path, body) for method, path, body in api.requests if method == "POST"]
    assert create[0] == "/apis/batch/v1/namespaces/training/jobs"
    job = create[1]
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "registry.example.com/adapter-factory-worker:1"
    assert container["command"] == ["python", "-m", "worker.remote"]
    assert container["resources"]["limits"] == {"nvidia.com/gpu": "1"}
    env = {e["name"]: e["value"] for e in container["env"]}
    assert {"DAGSTER_PIPES_CONTEXT", "DAGSTER_PIPES_MESSAGES", "FACTORY_STAGE"} <= set(env)
    assert (pod["restartPolicy"], pod["serviceAccountName"], pod["nodeSelector"]) == (
        "Never", "factory-worker", {"gpu": "a10g"})
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["activeDeadlineSeconds"] == config.compute.max_runtime_s
    assert job["metadata"]["labels"]["dagster/run-id"] == result.run_id
    (delete,) = [path for method, path, _ in api.requests if method == "DELETE"]
    # deleted with its pods
    assert delete == (f"/apis/batch/v1/namespaces/training/jobs/{job['metadata']['name']}"
                      "?propagationPolicy=Background")


@pytest.mark.slow
def test_a_failed_kubernetes_job_fails_the_asset_and_is_deleted(
        tmp_path: Path, s3_endpoint: str, s3_env: None,
        recorded: Callable[[RecordingApi], RecordingApi]) -> None:
    api = recorded(FakeKubernetes(runs=False))
    config = k8s_project(tmp_path / "project", s3_endpoint, api)
    result = materialize(config, "adapter/sft", raise_on_error=False)
    error = failure_of(result)
    assert re.search(r"job training/factory-train-adapter-sft-\w+-0 failed", error)
    assert [m for m, _, _ in api.requests].count("DELETE") == 1 and not api.machines


# -- Compute Engine ---------------------------------------------------------------------------
def gce_project(root: Path, endpoint: str, api: RecordingApi) -> FactoryConfig:
    return remote_project(root, endpoint, "gce", {
        "api_url": api.url, "project": "ml-prod", "zone": "us-central1-a",
        "machine_type": "g2-standard-8", "accelerator": "nvidia-l4",
        "image": "projects/deeplearning-platform-release/global/images/family/common-cu124",
        "service_account": "factory-worker@ml-prod.iam.gserviceaccount.com",
        "worker_command": f"env PYTHONPATH={REPO_ROOT} {WORKER_PYTHON}"})


@pytest.mark.slow
def test_an_adapter_trains_on_a_compute_engine_instance(
        tmp_path: Path, s3_endpoint: str, s3_env: None,
        recorded: Callable[[RecordingApi], RecordingApi]) -> None:
    api = recorded(FakeComputeEngine(tmp_path / "vm.log"))
    config = gce_project(tmp_path / "project", s3_endpoint, api)
    api.before_boot = away = BaseModelAway(config, s3_endpoint)
    instance = dg.DagsterInstance.ephemeral()
    result = materialize(config, "adapter/sft", instance=instance)
    for worker in api.workers:
        worker.join(60)
    assert_trained_through_s3(config, result, s3_endpoint, instance, away.restore())

    collection = "/compute/v1/projects/ml-prod/zones/us-central1-a/instances"
    (create,) = [(path, body) for method, path, body in api.requests if method == "POST"]
    assert create[0] == collection
    vm = create[1]
    assert vm["machineType"] == "zones/us-central1-a/machineTypes/g2-standard-8"
    assert vm["guestAccelerators"] == [{
        "acceleratorType": "zones/us-central1-a/acceleratorTypes/nvidia-l4",
        "acceleratorCount": 1}]
    assert vm["scheduling"]["onHostMaintenance"] == "TERMINATE"  # GPUs cannot live-migrate
    assert vm["scheduling"]["maxRunDuration"] == {"seconds": str(config.compute.max_runtime_s)}
    assert vm["disks"][0]["autoDelete"] is True
    assert vm["serviceAccounts"][0]["email"] == "factory-worker@ml-prod.iam.gserviceaccount.com"
    assert vm["labels"]["dagster-run-id"] == result.run_id
    script = {i["key"]: i["value"] for i in vm["metadata"]["items"]}["startup-script"]
    assert script.endswith((REPO_ROOT / "infra" / "remote" / "bootstrap.sh").read_text())
    assert "worker exited with 0" in api.log.read_text()
    deletes = [path for method, path, _ in api.requests if method == "DELETE"]
    assert deletes == [f"{collection}/{vm['name']}"] and not api.machines


@pytest.mark.slow
def test_a_preempted_compute_engine_instance_fails_the_asset_and_is_deleted(
        tmp_path: Path, s3_endpoint: str, s3_env: None,
        recorded: Callable[[RecordingApi], RecordingApi]) -> None:
    api = recorded(FakeComputeEngine(tmp_path / "vm.log", runs=False))
    config = gce_project(tmp_path / "project", s3_endpoint, api)
    error = failure_of(materialize(config, "adapter/sft", raise_on_error=False))
    assert re.search(r"gce instance us-central1-a/factory-train-\w+-0 is TERMINATED", error)
    assert [m for m, _, _ in api.requests].count("DELETE") == 1 and not api.machines


def test_remote_compute_needs_its_settings(tmp_path: Path) -> None:
    write_project(tmp_path, {})
    raw = yaml.safe_load((tmp_path / "factory.yaml").read_text())
    for kind, settings, message in [
        ("ec2", None, r"compute\.ec2 is missing: give at least image_id and staging_url"),
        ("k8s", None, r"compute\.k8s is missing: give at least staging_url"),
        ("gce", None, r"compute\.gce is missing: give at least project, image and staging_url"),
        ("ec2", {"image_id": "ami-1", "staging_url": "bucket/x"},
         "staging_url must be s3://bucket/prefix"),
    ]:
        raw["compute"] = {"kind": kind, kind: settings}
        (tmp_path / "factory.yaml").write_text(yaml.safe_dump(raw))
        with pytest.raises(ConfigError, match=message):
            load_config(tmp_path / "factory.yaml")
