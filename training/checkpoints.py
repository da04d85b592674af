"""Training checkpoints mirrored to the object store while a run trains, and restored on retry.

A run killed mid-way (instance lost, worker crashed) leaves its last checkpoint in the store; the
retry downloads it into the run folder and Axolotl resumes from it
(`auto_resume_from_checkpoints`), reaching the same final step. A checkpoint is uploaded only
once it is finished (`worker.checkpoints`: its trainer state, written last, is complete), and a
checkpoint the trainer rotates away while it uploads is left for the next one; any other upload
failure fails the step once training ends, since the run would not be resumable.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from store.artifacts import ArtifactStore
from store.keys import MANIFEST
from worker.checkpoints import finished, step_of


class Checkpoints:
    def __init__(self, store: ArtifactStore, prefix: str, run_dir: Path, log: Any,
                 poll_s: float = 1.0) -> None:
        self.store, self.prefix, self.run_dir, self.log = store, prefix, run_dir, log
        self.poll_s = poll_s
        self.uploaded: set[str] = set()

    def local(self) -> list[Path]:
        return finished(self.run_dir)

    def stored(self) -> list[str]:
        names = {key.split("/")[0] for key in
                 (k.removeprefix(self.prefix + "/") for k in self.store.list(self.prefix))}
        return sorted((n for n in names if step_of(n) >= 0 and self.store.is_complete(
            f"{self.prefix}/{n}")), key=step_of)

    def restore(self) -> int | None:
        """The step a retry resumes from: a local checkpoint, else the newest stored one."""
        if local := self.local():
            return step_of(local[-1].name)
        stored = self.stored()
        if not stored:
            return None
        latest = stored[-1]
        shutil.copytree(self.store.local_dir(f"{self.prefix}/{latest}"), self.run_dir / latest,
                        ignore=shutil.ignore_patterns(MANIFEST))
        self.log.info(f"restored {latest} from {self.store.url}/{self.prefix}")
        return step_of(latest)

    def upload_new(self) -> None:
        for path in self.local():
            if path.name in self.uploaded:
                continue
            try:
                self.store.put_dir(f"{self.prefix}/{path.name}", path)
            except FileNotFoundError:  # rotated away mid-upload: stored without a manifest
                self.log.info(f"{path.name} was replaced by a newer checkpoint during its upload")
                continue
            self.uploaded.add(path.name)
            self.log.info(f"checkpoint {path.name} saved to the object store")

    @contextmanager
    def mirrored(self) -> Iterator[None]:
        """Upload each new checkpoint while the body (the training run) executes."""
        stop = threading.Event()
        failures: list[BaseException] = []

        def loop() -> None:
            while not stop.wait(self.poll_s):
                try:
                    self.upload_new()
                except Exception as exc:  # re-raised in the step once training ends
                    failures.append(exc)
                    self.log.error(f"checkpoints stopped reaching {self.store.url}: {exc!r}")
                    return

        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
        if failures:
            raise RuntimeError(f"checkpoints of {self.run_dir} could not be stored; the run "
                               "stays resumable from its local checkpoints") from failures[0]
        self.upload_new()

    def discard(self) -> None:
        """The finished adapter is published; its checkpoints are no longer needed."""
        self.store.delete_prefix(self.prefix)
