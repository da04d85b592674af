"""GPU training of a 1B-shaped Llama through the worker's own Axolotl path (LoRA, QLoRA and
packed LoRA, each as the adapter asset renders it for the GPU box) against bare TRL SFTTrainer
with the same hyperparameters, side by side in one run on a lent GPU machine: tokens/s, MFU
against the card's bf16 peak, peak GPU memory against our estimate, and the ratio to TRL.

Here (no GPU), once, then the check the device call relies on:
    .venvs/factory/bin/python -m bench.gpu.bundle            # bench/gpu/bundle/, git-ignored
    .venvs/factory/bin/python -m bench.gpu_training --dry-run

On the GPU machine (the device tool, at most 8 minutes): one call per part of the bundle, each
carrying what manifest.json's "calls" lists and running `bash bench/gpu/run.sh`, one right after
the other while the machine is warm; each unpacks its part, and the last (which carries the
model, recipes and manifest too) runs --device --out $OUT.

The dry run checks what the device calls need and cannot fetch there: the bundle is whole and
each call within its size limit (the repository included), its parts hold every package the
run imports (cp312 wheels, bitsandbytes' CUDA 13 library), its recipes are what the adapter
asset renders today, and Axolotl's own validation accepts them as for the GPU box. It lists
every problem it finds.

Top-level imports are the standard library only: the GPU image has no pydantic or Dagster.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bench" / "gpu" / "bundle"
NEEDED = ("axolotl", "trl", "datasets", "peft", "transformers", "accelerate", "bitsandbytes",
          "dagster_pipes")  # top-level packages the device run imports from the archive
RECIPE_TIMEOUT_S = 150
DEVICE_CALL_BYTES = 64 * 2**20  # what one device call carries: the repository and its carry


def manifest(bundle: Path) -> dict[str, Any]:
    path = bundle / "manifest.json"
    if not path.is_file():
        raise SystemExit(f"{path} is missing: build the bundle first "
                         "(`.venvs/factory/bin/python -m bench.gpu.bundle`)")
    return json.loads(path.read_text())


# -- dry run (here) ----------------------------------------------------------------------------
def travelling_repository_bytes() -> int:
    """What every device call carries besides its bundle part: the tracked and untracked (not
    ignored) files of the checkout."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                             "--exclude-standard"], cwd=REPO, capture_output=True, check=True)
    files = [REPO / name for name in listed.stdout.decode().split("\0") if name]
    return sum(f.stat().st_size for f in files if f.is_file())


def carried_bytes(paths: list[str]) -> int:
    return sum(p.stat().st_size for path in paths for p in
               ([REPO / path] if (REPO / path).is_file() else (REPO / path).rglob("*"))
               if p.is_file())


def check_archive(bundle: Path, facts: dict[str, Any]) -> list[str]:
    """Each device call fits (its part, the benchmark's files on the last, the repository),
    and together the parts hold every package the run imports, as cp312 builds."""
    problems = []
    repository = travelling_repository_bytes()
    limit = DEVICE_CALL_BYTES
    for number, carry in enumerate(facts["calls"], 1):
        size = carried_bytes(carry) + repository
        print(f"device call {number}: carry {carry}: {size / 2**20:.1f} MiB with the "
              f"repository (limit {limit / 2**20:.0f} MiB)")
        if size > limit:
            problems.append(f"device call {number} carries {size / 2**20:.1f} MiB, over the "
                            f"{limit / 2**20:.0f} MiB a call takes")
    names: list[str] = []
    for number, archives in enumerate(facts["parts"], 1):
        for archive in archives:
            with tarfile.open(bundle / f"part-{number}" / archive) as tar:
                names += tar.getnames()
    tops = {n.split("/")[0] for n in names}
    problems += [f"no part holds {top}/" for top in NEEDED if top not in tops]
    if not any(n.endswith(f"bitsandbytes/{facts['cuda_library']}") for n in names):
        problems.append(f"no part holds bitsandbytes' {facts['cuda_library']} (QLoRA)")
    for package in facts["packages"]:
        wheel = package["from"]
        if wheel.endswith(".whl") and not any(tag in wheel for tag in ("-cp312-", "-abi3-",
                                                                        "-py3-none-")):
            problems.append(f"{wheel} is not for CPython 3.12")
    return problems


def check_recipes(bundle: Path, facts: dict[str, Any]) -> list[str]:
    """The stored recipes are today's rendering, and Axolotl validates them for the box."""
    from bench.gpu.bundle import TRAIN_PYTHON, render
    from bench.gpu.recipes import PLACEHOLDER, RECIPES
    from compute.gpus import parse_gpu

    problems = []
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp)
        shutil.copytree(bundle / "model", run / "model")
        files = []
        for name in RECIPES:
            stored = (bundle / "recipes" / f"{name}.yaml").read_text()
            if stored != render(name, Path(PLACEHOLDER)):
                problems.append(f"recipes/{name}.yaml differs from what the adapter asset "
                                "renders now: rebuild the bundle")
            path = run / f"{name}.yaml"
            path.write_text(stored.replace(PLACEHOLDER, str(run)))
            files.append(path)
        box = parse_gpu(facts["estimate"]["gpu"])
        done = subprocess.run([str(TRAIN_PYTHON), "-m", "worker.validate", *map(str, files),
                               "--gpu", json.dumps(box.capabilities())], cwd=REPO,
                              capture_output=True, text=True)
        if done.returncode != 0:
            return [*problems, f"worker.validate failed: {done.stderr[-2000:]}"]
        found = json.loads(done.stdout.strip().splitlines()[-1])
        for file, rejected in found.items():
            problems += [f"Axolotl rejects {Path(file).stem}: {p['key']}: {p['message']}"
                         for p in rejected]
    return problems


def dry_run(bundle: Path) -> None:
    facts = manifest(bundle)
    problems = check_archive(bundle, facts) + check_recipes(bundle, facts)
    estimate = facts["estimate"]
    print(f"bundle {bundle}: {facts['bundle_bytes'] / 2**20:.1f} MiB in {len(facts['calls'])} "
          f"device calls, {len(facts['packages'])} packages for cp312; recipes for "
          f"{estimate['box']}, "
          f"{estimate['parameters'] / 1e9:.2f} B parameters")
    print("| recipe | estimated GPU GiB | tokens per step | step time at 40% MFU |")
    print("|---|---|---|---|")
    for name, e in estimate["recipes"].items():
        print(f"| {name} | {e['gpu_gib']} | {e['tokens_per_step']:,} | "
              f"{e['rows']['step time']} |")
    if problems:
        raise SystemExit("not ready for the GPU machine:\n- " + "\n- ".join(problems))
    print("ready: the bundle, its archive and the rendered recipes check out")


# -- on the GPU machine ------------------------------------------------------------------------
def card_peak(facts: dict[str, Any], device_name: str) -> tuple[str, float]:
    """Our table's card for torch's device name ("NVIDIA H100 80GB HBM3"), and its bf16 peak."""
    for name, tflops in sorted(facts["peaks"].items(), key=lambda p: -len(p[0].split("-")[0])):
        if name.split("-")[0] in device_name:
            return name, tflops
    raise SystemExit(f"{device_name} is not in compute/gpus.py's table")


def draw_model(bundle: Path, run: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    shutil.copytree(bundle / "model", run / "model")
    torch.manual_seed(0)
    config = AutoConfig.from_pretrained(run / "model")
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(run / "model")


def mean_row_tokens(run: Path, sequence_len: int) -> float:
    """Tokens a row puts through the model (chat template applied, cut at sequence_len)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(run / "model")
    rows = [json.loads(line)["messages"] for line in (run / "train.jsonl").open()][:500]
    return statistics.mean(min(sequence_len, len(tokenizer.apply_chat_template(r, tokenize=True)))
                           for r in rows)


def axolotl_run(name: str, bundle: Path, run: Path, out: Path) -> dict[str, Any]:
    """The worker's own command line and environment on the stored recipe."""
    from bench.gpu.recipes import PLACEHOLDER
    from worker.train import axolotl_command, axolotl_env, final_metrics, trainer_state

    config = run / f"{name}.yaml"
    config.write_text((bundle / "recipes" / f"{name}.yaml").read_text()
                      .replace(PLACEHOLDER, str(run)))
    log = out / f"{name}.log"
    started = time.monotonic()
    with log.open("w") as f:
        done = subprocess.run(axolotl_command(config, 1), stdout=f, stderr=subprocess.STDOUT,
                              env=axolotl_env(), cwd=REPO, timeout=RECIPE_TIMEOUT_S)
    if done.returncode != 0:
        return {"error": f"exit {done.returncode}: " + log.read_text()[-1500:]}
    history = trainer_state(run / "runs" / name)["log_history"]
    end = final_metrics(log)
    return {"samples_per_second": end.get("train_samples_per_second"),
            "train_runtime": end.get("train_runtime"), "wall_s": time.monotonic() - started,
            "gpu_peak_gib": max((h["memory/max_allocated (GiB)"] for h in history
                                 if "memory/max_allocated (GiB)" in h), default=None)}


def trl_run(run: Path, out: Path) -> dict[str, Any]:
    from bench.gpu.recipes import LORA, TRAINING

    t = TRAINING
    result = out / "trl.json"
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "trl_sft_baseline.py"), str(run / "model"),
         str(run / "train.jsonl"), str(result), str(t["max_steps"]),
         str(t["micro_batch_size"]), str(t["sequence_len"]), str(t["learning_rate"]),
         str(LORA["r"]), str(LORA["alpha"]), str(t["warmup_steps"]), "gpu"],
        capture_output=True, text=True, cwd=REPO, timeout=RECIPE_TIMEOUT_S)
    (out / "trl.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        return {"error": f"exit {done.returncode}: {done.stderr[-1500:]}"}
    return json.loads(result.read_text())


def device(bundle: Path, out: Path, run: Path) -> None:
    import torch

    from bench.gpu.recipes import RECIPES, TRAINING

    facts = manifest(bundle)
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: --device runs on the lent GPU machine only")
    card, peak = card_peak(facts, torch.cuda.get_device_name())
    out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    shutil.copy(bundle / "train.jsonl", run / "train.jsonl")
    draw_model(bundle, run)
    row_tokens = mean_row_tokens(run, TRAINING["sequence_len"])
    results = {"card": torch.cuda.get_device_name(), "torch": torch.__version__,
               "row_tokens": row_tokens}
    for name in [*RECIPES, "trl"]:
        print(f"running {name} ...", flush=True)
        results[name] = trl_run(run, out) if name == "trl" else axolotl_run(name, bundle, run, out)
        print(json.dumps(results[name])[:400], flush=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    report(results, facts, card, peak, row_tokens)


def report(results: dict[str, Any], facts: dict[str, Any], card: str, peak: float,
           row_tokens: float) -> None:
    from bench.gpu.recipes import RECIPES, TRAINING

    estimates = facts["estimate"]["recipes"]
    print(f"\n{results['card']} (bf16 peak {peak:g} TFLOP/s, {card}), torch {results['torch']}; "
          f"{TRAINING['max_steps']} steps x {TRAINING['micro_batch_size']} rows, sequence "
          f"{TRAINING['sequence_len']}, rows average {row_tokens:.0f} tokens")
    print("| run | tokens/s | MFU | peak GiB | estimated GiB | vs TRL |")
    print("|---|---|---|---|---|---|")
    trl = results["trl"]
    trl_rate = (trl.get("samples_per_second") or 0) * row_tokens
    for name in [*RECIPES, "trl"]:
        r = results[name]
        if "error" in r:
            print(f"| {name} | failed: {r['error'][:200]} | | | | |")
            continue
        packed = RECIPES.get(name, {}).get("training", {}).get("packing", False)
        rate = r["samples_per_second"] * (TRAINING["sequence_len"] if packed else row_tokens)
        e = estimates["lora" if name == "trl" else name]
        flops_per_token = e["flops_per_step"] / e["tokens_per_step"]
        mfu = rate * flops_per_token / (peak * 1e12)
        print(f"| {name} | {rate:,.0f} | {mfu:.1%} | {r['gpu_peak_gib']} | {e['gpu_gib']} | "
              f"{rate / trl_rate if trl_rate else float('nan'):.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--dry-run", action="store_true", help="here: check the bundle")
    mode.add_argument("--device", action="store_true", help="on the GPU machine: run")
    parser.add_argument("--bundle", type=Path, default=BUNDLE)
    parser.add_argument("--out", type=Path, default=Path("gpu-results"))
    parser.add_argument("--run", type=Path, default=Path("/tmp/gpu-bench"))
    args = parser.parse_args()
    if args.dry_run:
        dry_run(args.bundle)
    else:
        device(args.bundle, args.out, args.run)


if __name__ == "__main__":
    main()
