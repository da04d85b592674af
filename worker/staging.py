"""Files that cross between the control plane and a remote training box, through S3.

A path keeps its absolute name on both sides (`<prefix>/<side>/<absolute path>`), so the rendered
Axolotl YAML and the job's extras run unchanged on the box. Both sides copy only what changed
since their last pass and move `trainer_state.json` last: the trainer writes it after a
checkpoint's weights, so whoever sees it sees a complete checkpoint. Downloads land in a temp
file first and are renamed into place, so a reader never sees half a file.

While a job runs the two sides may share a disk (a Kubernetes volume mounted by both, or one
test machine), so neither may hand the other a file that is still being written: the box
uploads a file only once it is unchanged since the previous pass (`settled`), and the control
plane takes only finished checkpoints (`finished_only`) and leaves a file alone when it already
holds the same bytes. Everything else crosses once the job has ended.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from store.s3 import objects, split_url

LAST = "trainer_state.json"
DONE = "done.json"


def _marker_last(items: Iterable[Any], name: Any) -> list[Any]:
    return sorted(items, key=lambda item: name(item) == LAST)


@dataclass
class Stage:
    """One job's staging area: `s3://bucket/prefix` holding inputs/, outputs/ and done.json."""

    client: Any
    bucket: str
    prefix: str
    sent: dict[str, tuple[int, int]] = field(default_factory=dict)
    seen: dict[str, tuple[int, int]] = field(default_factory=dict)
    received: dict[str, str] = field(default_factory=dict)

    @classmethod
    def at(cls, url: str, client: Any = None) -> Stage:
        bucket, prefix = split_url(url)
        if client is None:
            import boto3

            client = boto3.client("s3")
        return cls(client, bucket, prefix.strip("/"))

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def key(self, side: str, path: Path) -> str:
        return f"{self.prefix}/{side}/{str(path.resolve()).lstrip('/')}"

    def push(self, side: str, roots: Iterable[Path], settled: bool = False) -> int:
        """Upload the files under `roots` that are new or changed; returns how many. With
        `settled`, a file goes only once its size and mtime match the previous pass: one that is
        still being written waits for the next pass (or the last, unsettled one)."""
        files = [f for root in roots if root.exists()
                 for f in ([root] if root.is_file() else root.rglob("*")) if f.is_file()]
        count = 0
        for path in _marker_last(files, lambda p: p.name):
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue  # a writer's temp file, renamed since the listing: the next pass has it
            signature = (stat.st_size, stat.st_mtime_ns)
            previous, self.seen[str(path)] = self.seen.get(str(path)), signature
            if self.sent.get(str(path)) == signature or (settled and previous != signature):
                continue
            try:
                self.client.upload_file(str(path), self.bucket, self.key(side, path))
            except FileNotFoundError:
                continue
            self.sent[str(path)] = signature
            count += 1
        return count

    def pull(self, side: str, finished_only: bool = False) -> int:
        """Download the objects of `side` that are new or changed to their paths; how many.
        With `finished_only`, only `checkpoint-*` folders whose trainer state has arrived."""
        base = f"{self.prefix}/{side}/"
        listed = list(objects(self.client, self.bucket, base))
        if finished_only:
            done = {o["Key"].rsplit("/", 1)[0] for o in listed if o["Key"].endswith(f"/{LAST}")}
            listed = [o for o in listed if o["Key"].rsplit("/", 1)[0] in done]
        count = 0
        for obj in _marker_last(listed, lambda o: o["Key"].rsplit("/", 1)[-1]):
            if self.received.get(obj["Key"]) == obj["ETag"]:
                continue
            target = Path("/" + obj["Key"].removeprefix(base))
            if not _holds(target, obj):
                _download(self.client, self.bucket, obj["Key"], target)
                count += 1
            self.received[obj["Key"]] = obj["ETag"]
        return count

    def mark_done(self, exit_code: int, error: str | None = None) -> None:
        body = json.dumps({"exit_code": exit_code, "error": error})
        self.client.put_object(Bucket=self.bucket, Key=f"{self.prefix}/{DONE}", Body=body)

    def done(self) -> dict[str, Any] | None:
        """The box's final word, once it has pushed its last outputs; None while it works."""
        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=f"{self.prefix}/{DONE}")
        except self.client.exceptions.NoSuchKey:
            return None
        return json.loads(obj["Body"].read())


def _holds(target: Path, obj: dict[str, Any]) -> bool:
    """Whether `target` already has the object's bytes (a disk shared with the box). A
    multipart upload's ETag is no MD5, so such an object always counts as different."""
    try:
        if target.stat().st_size != obj["Size"]:
            return False
    except FileNotFoundError:
        return False
    etag = obj["ETag"].strip('"')
    if "-" in etag:
        return False
    with target.open("rb") as f:
        return hashlib.file_digest(f, "md5").hexdigest() == etag


def _download(client: Any, bucket: str, key: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    os.close(fd)
    try:
        client.download_file(bucket, key, tmp)
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)
