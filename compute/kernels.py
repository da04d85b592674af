"""The environment that makes CPU training give the same numbers on any x86-64 machine.

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
"""

from __future__ import annotations

REPRODUCIBLE_CPU: dict[str, str] = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2,STRICT"}
