"""The S3 stage between the control plane and a training box, when both sides share one disk
(a Kubernetes volume mounted by the Dagster pod and the job): neither side may hand the other a
file that is still being written or replace the box's live files with older copies."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import boto3

from worker.staging import Stage


def stage_at(endpoint: str) -> Stage:
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="test", aws_secret_access_key="test")
    bucket = f"stage-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    return Stage.at(f"s3://{bucket}/run/0/train", client=client)


def test_a_file_still_being_written_waits_until_it_has_settled(
        tmp_path: Path, s3_endpoint: str) -> None:
    box = stage_at(s3_endpoint)
    log = tmp_path / "train.log"
    log.write_text("step 1\n")
    assert box.push("outputs", [tmp_path], settled=True) == 0  # first sight: may still grow
    with log.open("a") as f:
        f.write("step 2\n")
    os.utime(log, ns=(1, 1))
    assert box.push("outputs", [tmp_path], settled=True) == 0  # changed since: still growing
    assert box.push("outputs", [tmp_path], settled=True) == 1  # unchanged for a pass
    log.write_text("step 1\nstep 2\nstep 3\n")
    assert box.push("outputs", [tmp_path]) == 1  # the job has ended: everything goes


def test_while_the_box_runs_only_finished_checkpoints_come_back(
        tmp_path: Path, s3_endpoint: str) -> None:
    box_dir, plane = tmp_path / "box", tmp_path / "plane"
    box = stage_at(s3_endpoint)
    done, writing = box_dir / "checkpoint-2", box_dir / "checkpoint-4"
    for folder in (done, writing):
        folder.mkdir(parents=True)
        (folder / "adapter_model.safetensors").write_bytes(b"weights" * 100)
    (done / "trainer_state.json").write_text(json.dumps({"global_step": 2}))
    (box_dir / "train.log").write_text("step 4\n")
    assert box.push("outputs", [box_dir]) == 4

    control = Stage.at(box.url, client=box.client)
    for obj in box.client.list_objects_v2(Bucket=box.bucket, Prefix=box.prefix)["Contents"]:
        # the control plane's disk is another one here: its run folder is `plane`
        relative = obj["Key"].split(str(box_dir))[1]
        box.client.copy_object(Bucket=box.bucket, Key=f"{box.prefix}/outputs{plane}{relative}",
                               CopySource={"Bucket": box.bucket, "Key": obj["Key"]})
        box.client.delete_object(Bucket=box.bucket, Key=obj["Key"])
    assert control.pull("outputs", finished_only=True) == 2
    assert sorted(p.relative_to(plane).as_posix() for p in plane.rglob("*") if p.is_file()) == [
        "checkpoint-2/adapter_model.safetensors", "checkpoint-2/trainer_state.json"]
    assert control.pull("outputs") == 2  # the box has ended: the rest
    assert (plane / "train.log").read_text() == "step 4\n"


def test_a_file_that_already_holds_the_same_bytes_is_left_in_place(
        tmp_path: Path, s3_endpoint: str) -> None:
    box = stage_at(s3_endpoint)
    checkpoint = tmp_path / "checkpoint-2"
    checkpoint.mkdir()
    state = checkpoint / "trainer_state.json"
    state.write_text(json.dumps({"global_step": 2}))
    box.push("outputs", [tmp_path])
    inode = state.stat().st_ino

    control = Stage.at(box.url, client=box.client)  # the same disk: nothing to copy
    assert control.pull("outputs") == 0
    assert state.stat().st_ino == inode
    state.write_text(json.dumps({"global_step": 2, "log_history": []}))
    assert control.pull("outputs") == 0  # already received: the box's newer file stays
    assert "log_history" in state.read_text()
