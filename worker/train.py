"""Run `axolotl train` on a rendered config and report the training curve back over Pipes.

The config arrives fully rendered (the control plane owns the recipe -> YAML mapping), so a user
can rerun exactly this YAML by hand (`python -m worker.seeded_axolotl train axolotl.yaml`, which
is `axolotl train` with the LoRA initialisation seeded too). The finished model lands in
`<output_dir>/final` with the training log beside it; checkpoints stay in `<output_dir>` and a
rerun resumes from the newest (`auto_resume_from_checkpoints`). Weights & Biases writes its
offline run under `<output_dir>`.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from dagster_pipes import PipesContext

from worker import checkpoints, seeded_axolotl
from worker.pipes import open_pipes

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
NOISE = ("it/s]", "s/it]", "%|")  # progress-bar redraws; the full log keeps them


def axolotl_env() -> dict[str, str]:
    """Axolotl's traps on a CPU box: it looks up /bin/accelerate without the venv on PATH, tries
    CUDA unless hidden, and its telemetry retries an unreachable host at exit."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("AXOLOTL_DO_NOT_TRACK", "1")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("HF_DATASETS_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("WANDB_MODE", "offline")
    return env


class PeakMemory:
    """Largest resident memory of a process tree, sampled while it runs."""

    def __init__(self, pid: int, interval_s: float = 0.5) -> None:
        self.pid, self.interval_s, self.peak_mib = pid, interval_s, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        import psutil

        while not self._stop.wait(self.interval_s):
            try:
                root = psutil.Process(self.pid)
                rss = sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])
            except psutil.Error:
                continue
            self.peak_mib = max(self.peak_mib, rss / 2**20)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return round(self.peak_mib, 1)


def axolotl_command(config_path: Path, gpus: int) -> list[str]:
    """One training process, or one per GPU under torchrun (each rank runs the seeded Axolotl
    in-process; DeepSpeed/FSDP/DDP read torchrun's rank variables)."""
    train = ["-m", "worker.seeded_axolotl", "train", str(config_path), "--launcher", "python"]
    if gpus == 1:
        return [sys.executable, *train]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={gpus}", *train]


def run_axolotl(config_path: Path, log_path: Path, pipes: PipesContext,
                env: dict[str, str], gpus: int = 1) -> float | None:
    """Run to completion, relaying log lines; returns the peak memory in MiB, or None when
    Axolotl rejected the config (nothing was loaded or trained)."""
    cmd = axolotl_command(config_path, gpus)
    pipes.log.info("running: " + " ".join(cmd))
    tail: list[str] = []
    with log_path.open("a") as log, subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, bufsize=1,
    ) as proc:
        memory = PeakMemory(proc.pid)
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            line = line.rstrip()
            tail = [*tail[-40:], line]
            if line and not any(n in line for n in NOISE):
                pipes.log.info(line[:2000])
        code = proc.wait()
        peak = memory.stop()
    if code == seeded_axolotl.INVALID_CONFIG:
        return None
    if code != 0:
        raise RuntimeError(
            f"axolotl train exited with {code}; full log {log_path}; last lines:\n"
            + "\n".join(tail)
        )
    return peak


def wandb_run(output_dir: Path) -> str | None:
    runs = sorted((output_dir / "wandb").glob("*run-*"), key=lambda p: p.stat().st_mtime)
    return str(runs[-1]) if runs else None


def trainer_state(output_dir: Path) -> dict[str, Any]:
    """The newest checkpoint's state: global step and the logged losses so far."""
    done = checkpoints.finished(output_dir)
    state = checkpoints.state_of(done[-1]) if done else None
    return state or {"global_step": 0, "log_history": []}


FINAL_METRICS = re.compile(r"\{'train_runtime': .*?\}")


def final_metrics(log_path: Path) -> dict[str, float]:
    """The trainer's closing summary (runtime, samples/s), printed once at the end of training
    and never saved in a checkpoint."""
    found = FINAL_METRICS.findall(log_path.read_text(errors="replace"))
    if not found:
        return {}
    return {k: float(v) for k, v in ast.literal_eval(found[-1]).items()
            if isinstance(v, int | float | str) and _is_number(v)}


def _is_number(value: object) -> bool:
    try:
        float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return True


def collect_final(output_dir: Path, adapter: bool) -> Path:
    """Copy the servable result (not the optimizer state) into `final/`."""
    final = output_dir / "final"
    shutil.rmtree(final, ignore_errors=True)
    final.mkdir()
    if adapter:
        for name in ADAPTER_FILES:
            if not (output_dir / name).is_file():
                raise RuntimeError(f"axolotl finished but wrote no {name} in {output_dir}")
            shutil.copy2(output_dir / name, final / name)
    else:
        for path in output_dir.iterdir():
            if path.is_file() and not path.name.endswith((".log", ".yml", ".yaml")):
                shutil.copy2(path, final / path.name)
        if not list(final.glob("*.safetensors")):
            raise RuntimeError(f"axolotl finished but wrote no *.safetensors in {output_dir}")
    return final


PACKAGES = ("axolotl", "torch", "transformers", "peft", "trl", "accelerate", "datasets")


def package_versions() -> dict[str, str]:
    """What trained the adapter, for its manifest: reruns need the same stack."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def main() -> None:
    with open_pipes() as pipes:
        params = pipes.extras
        output_dir = Path(params["output_dir"])
        output_dir.mkdir(parents=True, exist_ok=True)
        config_path = output_dir / "axolotl.yaml"
        config_path.write_text(params["axolotl_yaml"])
        for name in checkpoints.remove_unfinished(output_dir):
            pipes.log.warning(f"removed {name}: a crash left it half-written")
        done = checkpoints.finished(output_dir)
        resumed = checkpoints.step_of(done[-1].name) if done else None
        if resumed is not None:
            pipes.log.info(f"resuming from checkpoint-{resumed}")
        problems = output_dir / "axolotl_problems.json"
        problems.unlink(missing_ok=True)
        env = axolotl_env() | {"WANDB_DIR": str(output_dir),
                               seeded_axolotl.PROBLEMS_ENV: str(problems)}
        started = time.monotonic()
        peak = run_axolotl(config_path, output_dir / "train.log", pipes, env,
                           params.get("gpus", 1))
        if peak is None:
            pipes.report_custom_message({"problems": json.loads(problems.read_text())})
            return
        wall = time.monotonic() - started
        state = trainer_state(output_dir)
        history = state["log_history"]
        final = collect_final(output_dir, adapter=params["adapter"])
        (final / "training_log.json").write_text(json.dumps(history, indent=1))
        shutil.copy2(config_path, final / "axolotl.yaml")
        losses = [h["loss"] for h in history if "loss" in h]
        eval_losses = [h["eval_loss"] for h in history if "eval_loss" in h]
        end = final_metrics(output_dir / "train.log")
        summary = {
            "resumed_from_step": resumed,
            "peak_memory_mib": peak,
            # Axolotl logs torch.cuda.max_memory_allocated on a GPU
            "gpu_peak_gib": max((h["memory/max_allocated (GiB)"] for h in history
                                 if "memory/max_allocated (GiB)" in h), default=None),
            "samples_per_second": end.get("train_samples_per_second"),
            "wandb_run": wandb_run(output_dir),
            "wall_seconds": round(wall, 1),
            "steps": state["global_step"],
            "first_loss": losses[0] if losses else None,
            "final_loss": losses[-1] if losses else end.get("train_loss"),
            "train_runtime": end.get("train_runtime"),
            "eval_loss": eval_losses[-1] if eval_losses else None,
            "packages": package_versions(),
        }
        pipes.report_custom_message(summary)


if __name__ == "__main__":
    main()
