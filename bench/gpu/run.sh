#!/usr/bin/env bash
# On the lent GPU machine, from the repository root (the device tool's `run`). The bundle travels
# in parts, one device call each while the machine stays warm (manifest.json's "calls" lists
# what each carries): every call unpacks the part it carries into /tmp/gpu-site; the call that
# also carries manifest.json checks that every part is there and runs the benchmark, whose
# tables and logs land in $OUT. Built and checked here first:
#   .venvs/factory/bin/python -m bench.gpu.bundle && .venvs/factory/bin/python -m bench.gpu_training --dry-run
set -euo pipefail
bundle=bench/gpu/bundle
site=/tmp/gpu-site
[ -d "$bundle/part-1" ] && rm -rf "$site"  # the first call starts afresh
mkdir -p "$site/.parts"
for part in "$bundle"/part-*; do
  [ -d "$part" ] || continue
  for archive in "$part"/*.tar.xz; do tar -xJf "$archive" -C "$site"; done
  touch "$site/.parts/$(basename "$part")"
  echo "unpacked $(basename "$part") into $site"
done
if [ ! -f "$bundle/manifest.json" ]; then
  echo "now the next call of manifest.json's \"calls\", while this machine is warm"
  exit 0
fi
python3 - "$bundle/manifest.json" "$site/.parts" <<'PY'
import json, pathlib, sys
parts = len(json.loads(pathlib.Path(sys.argv[1]).read_text())["parts"])
missing = [f"part-{n}" for n in range(1, parts + 1) if not (pathlib.Path(sys.argv[2]) / f"part-{n}").exists()]
if missing:
    sys.exit(f"{', '.join(missing)} not unpacked on this machine: run the calls in order, "
             "each while the machine is warm")
PY
export PYTHONPATH="$site:$PWD" HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 AXOLOTL_DO_NOT_TRACK=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -m bench.gpu_training --device --out "${OUT:-gpu-results}" | tee "${OUT:-.}/report.md"
