"""What a remote training box runs (the EC2 bootstrap's last step): stage in, run one worker job,
stage out while it runs and once more when it ends, then say it is done.

Its spec comes in `FACTORY_STAGE` (JSON: job, url, outputs, sync_s); the job itself inherits the
Pipes variables and writes its messages to S3 (worker/pipes.py). Outputs are pushed every
`sync_s` seconds, so checkpoints of a box that dies mid-run are still in S3 for the retry.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import threading
import traceback
from pathlib import Path
from typing import IO

from worker.staging import Stage


class Tail(threading.Thread):
    """Relays a job's stderr to the box's log and keeps its last lines: the reason a failed job
    gives in done.json, which the control plane puts in the asset's failure."""

    def __init__(self, stream: IO[str], lines: int = 30) -> None:
        super().__init__(daemon=True)
        self.stream, self.lines = stream, collections.deque[str](maxlen=lines)
        self.start()

    def run(self) -> None:
        for line in self.stream:
            sys.stderr.write(line)
            self.lines.append(line.rstrip())

    def text(self) -> str:
        self.join(timeout=10)
        return "\n".join(self.lines)


def run_job(stage: Stage, job: str, outputs: list[Path], sync_s: float) -> tuple[int, str]:
    """The job's exit code and its last stderr lines. Outputs go up while it runs once they
    have settled (the control plane may share this disk), and all of them once it has ended."""
    stage.pull("inputs")
    for path in outputs:
        path.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-m", f"worker.{job}"], stderr=subprocess.PIPE,
                            text=True, errors="replace")
    assert proc.stderr is not None
    tail = Tail(proc.stderr)
    while True:
        try:
            code = proc.wait(timeout=sync_s)
            break
        except subprocess.TimeoutExpired:
            stage.push("outputs", outputs, settled=True)
    stage.push("outputs", outputs)
    return code, tail.text()


def main() -> None:
    spec = json.loads(os.environ["FACTORY_STAGE"])
    stage = Stage.at(spec["url"])
    print(f"[worker.remote] job {spec['job']}, staging {stage.url}", flush=True)
    try:
        code, tail = run_job(stage, spec["job"], [Path(p) for p in spec["outputs"]],
                             float(spec.get("sync_s", 30)))
    except BaseException:
        # the control plane waits for this marker: tell it why instead of letting it time out
        stage.mark_done(1, traceback.format_exc())
        raise
    stage.mark_done(code, None if code == 0 else
                    f"worker.{spec['job']} exited with {code}; its last lines:\n{tail}")
    print(f"[worker.remote] job {spec['job']} exited with {code}", flush=True)
    sys.exit(code)


if __name__ == "__main__":
    main()
