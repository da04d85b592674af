"""Training checkpoints mirrored to the object store while a run trains, and restored on retry.

A run killed mid-way (instance lost, worker crashed) leaves its last checkpoint in the store; the
retry downloads it into the run folder and Axolotl resumes from it
(`auto_resume_from_checkpoints`), reaching the same final step. A checkpoint is uploaded only
once `trainer_state.json`, which the trainer writes after the weights and optimizer state, exists.
"""

from __future__ import annotations

import re
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from resources.object_store import MANIFEST, ObjectStore

STEP = re.compile(r"checkpoint-(\d+)$")


def step_of(name: str) -> int:
    match = STEP.search(name.rstrip("/"))
    return int(match.group(1)) if match else -1


class Checkpoints:
    def __init__(self, store: ObjectStore, prefix: str, run_dir: Path, log: Any,
                 poll_s: float = 1.0) -> None:
        self.store, self.prefix, self.run_dir, self.log = store, prefix, run_dir, log
        self.poll_s = poll_s
        self.uploaded: set[str] = set()

    def local(self) -> list[Path]:
        return sorted((p for p in self.run_dir.glob("checkpoint-*")
                       if (p / "trainer_state.json").is_file()), key=lambda p: step_of(p.name))

    def stored(self) -> list[str]:
        names = {key.split("/")[0] for key in
                 (k.removeprefix(self.prefix + "/") for k in self.store.list(self.prefix))}
        return sorted((n for n in names if STEP.search(n) and self.store.is_complete(
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
            if path.name not in self.uploaded:
                self.store.put_dir(f"{self.prefix}/{path.name}", path)
                self.uploaded.add(path.name)
                self.log.info(f"checkpoint {path.name} saved to the object store")

    @contextmanager
    def mirrored(self) -> Iterator[None]:
        """Upload each new checkpoint while the body (the training run) executes."""
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(self.poll_s):
                self.upload_new()

        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
        self.upload_new()

    def discard(self) -> None:
        """The finished adapter is published; its checkpoints are no longer needed."""
        self.store.delete_prefix(self.prefix)
