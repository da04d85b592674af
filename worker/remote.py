"""What a remote training box runs (the EC2 bootstrap's last step): stage in, run one worker job,
stage out while it runs and once more when it ends, then say it is done.

Its spec comes in `FACTORY_STAGE` (JSON: job, url, outputs, sync_s); the job itself inherits the
Pipes variables and writes its messages to S3 (worker/pipes.py). Outputs are pushed every
`sync_s` seconds, so checkpoints of a box that dies mid-run are still in S3 for the retry.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import traceback
from pathlib import Path

from worker.staging import Stage


def run_job(stage: Stage, job: str, outputs: list[Path], sync_s: float) -> int:
    stage.pull("inputs")
    for path in outputs:
        path.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-m", f"worker.{job}"])
    while True:
        try:
            code = proc.wait(timeout=sync_s)
            break
        except subprocess.TimeoutExpired:
            stage.push("outputs", outputs)
    stage.push("outputs", outputs)
    return code


def main() -> None:
    spec = json.loads(os.environ["FACTORY_STAGE"])
    stage = Stage.at(spec["url"])
    print(f"[worker.remote] job {spec['job']}, staging {stage.url}", flush=True)
    try:
        code = run_job(stage, spec["job"], [Path(p) for p in spec["outputs"]],
                       float(spec.get("sync_s", 30)))
    except BaseException:
        # the control plane waits for this marker: tell it why instead of letting it time out
        stage.mark_done(1, traceback.format_exc())
        raise
    stage.mark_done(code, None if code == 0 else f"worker.{spec['job']} exited with {code}")
    print(f"[worker.remote] job {spec['job']} exited with {code}", flush=True)
    sys.exit(code)


if __name__ == "__main__":
    main()
