"""The environment CPU worker jobs run with: the same numbers on any x86-64 machine, and a
fair share of the cores when another process is busy.

Measured (2026-11-29, 60 AdamW steps of a 4-layer Llama, final weights hashed): with the
default kernels, 1, 2 and 4 threads gave three different models and AVX2 vs AVX-512 kernels
another; with these two settings 1, 2, 4 and 8 threads gave bit-identical weights, 10-18 %
slower. A long seeded run amplifies the first differing bit, which is how one demo scored exact
match 0.455 on one machine and 0.58-0.81 on others.
- torch's own kernels (reductions, elementwise, softmax) choose their vector width by CPU:
  `ATEN_CPU_CAPABILITY=avx2` fixes it to one every x86-64-v3 server has;
- MKL's GEMM splits work by CPU and thread count: conditional numerical reproducibility in
  strict mode (`MKL_CBWR=AVX2,STRICT`) fixes both.
GPU kernels are not covered (cuBLAS/cuDNN have their own switches, and GPU runs are not
bit-reproducible across GPU models anyway).

How OpenMP threads wait: torch's CPU build runs on GNU OpenMP, whose threads spin
300,000 times at every barrier before they sleep. With one other busy process on a 2-core
machine, the spinning thread holds one core while its partner shares the other with that
process, so every parallel region waits for a time slice: training ran 3-5 times slower, not
the 2 a lost core explains (bench/busy_training.py). Spinning 10,000 times keeps the idle speed
and lets a waiting thread give its core up soon; numerics do not depend on it.
"""

from __future__ import annotations

REPRODUCIBLE_CPU: dict[str, str] = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2,STRICT"}
SHARED_CPU: dict[str, str] = {"GOMP_SPINCOUNT": "10000"}
