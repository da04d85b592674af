#!/usr/bin/env bash
# On the lent GPU machine, from the repository root (the device tool's `run`, carrying
# bench/gpu/bundle): unpack the packages its image lacks beside it, then the benchmark, whose
# tables and logs land in $OUT. Built and checked here first:
#   .venvs/factory/bin/python -m bench.gpu.bundle && .venvs/factory/bin/python -m bench.gpu_training --dry-run
set -euo pipefail
site=/tmp/gpu-site
rm -rf "$site" && mkdir -p "$site"
tar -xJf bench/gpu/bundle/site.tar.xz -C "$site"
export PYTHONPATH="$site:$PWD" HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 AXOLOTL_DO_NOT_TRACK=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -m bench.gpu_training --device --out "${OUT:-gpu-results}" | tee "${OUT:-.}/report.md"
