"""The GPUs training boxes carry: memory and dense bf16 peak per card (vendor datasheets, no
sparsity), and which card each cloud machine type or accelerator name has. The memory estimate
(compute/memory.py) checks a recipe against these before any machine starts, and the GPU
benchmark divides measured throughput by the peak for MFU.

Adding a card is one row in GPUS; a cloud's machine type, one row in its table below.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Gpu:
    name: str
    memory_gib: float   # what nvidia-smi reports (GiB), not the marketing GB
    bf16_tflops: float  # dense; for cards without bf16, their fp16 tensor peak
    compute_capability: str  # CUDA's sm_XY, what Axolotl's validation asks of a card
    bf16: bool = True   # False: mixed precision falls back to fp16


GPUS: dict[str, Gpu] = {g.name: g for g in (
    Gpu("T4", 15, 65, "sm_75", bf16=False),
    Gpu("A10G", 22, 125, "sm_86"),          # A10 datasheet; AWS's variant clocks a little lower
    Gpu("L4", 22, 121, "sm_89"),
    Gpu("L40S", 44.5, 362, "sm_89"),
    Gpu("A100-40GB", 39.4, 312, "sm_80"),
    Gpu("A100-80GB", 79.1, 312, "sm_80"),
    Gpu("H100-80GB", 79.1, 989, "sm_90"),   # SXM; the PCIe card peaks at 756
    Gpu("H200", 139.8, 989, "sm_90"),
)}

# EC2 instance families -> card, and how many per instance size (default 1)
EC2_FAMILIES = {"g4dn": "T4", "g5": "A10G", "g6": "L4", "g6e": "L40S", "p4d": "A100-40GB",
                "p4de": "A100-80GB", "p5": "H100-80GB", "p5e": "H200", "p5en": "H200"}
EC2_MULTI_GPU = {"g4dn.12xlarge": 4, "g4dn.metal": 8, "g5.12xlarge": 4, "g5.24xlarge": 4,
                 "g5.48xlarge": 8, "g6.12xlarge": 4, "g6.24xlarge": 4, "g6.48xlarge": 8,
                 "g6e.12xlarge": 4, "g6e.24xlarge": 4, "g6e.48xlarge": 8, "p4d.24xlarge": 8,
                 "p4de.24xlarge": 8, "p5.48xlarge": 8, "p5e.48xlarge": 8, "p5en.48xlarge": 8}
# Compute Engine accelerator types -> card
GCE_ACCELERATORS = {"nvidia-tesla-t4": "T4", "nvidia-l4": "L4", "nvidia-tesla-a100": "A100-40GB",
                    "nvidia-a100-80gb": "A100-80GB", "nvidia-h100-80gb": "H100-80GB",
                    "nvidia-h100-mega-80gb": "H100-80GB", "nvidia-h200-141gb": "H200"}


@dataclass(frozen=True)
class GpuBox:
    """The GPUs of one training machine."""

    gpu: Gpu
    count: int

    def __str__(self) -> str:
        return f"{self.count} x {self.gpu.name} ({self.gpu.memory_gib:g} GiB each)"

    def capabilities(self) -> dict[str, object]:
        """What Axolotl's validate_config asks of the hardware, so a GPU recipe is validated
        as for this box on a machine without one."""
        return {"bf16": self.gpu.bf16, "fp8": False, "tf32": True, "n_gpu": self.count,
                "n_node": 1, "compute_capability": self.gpu.compute_capability}


def gpu_named(name: str) -> Gpu:
    """A card by its name in GPUS, or a ValueError listing them."""
    if name not in GPUS:
        raise ValueError(f"unknown GPU {name!r}; known: {', '.join(GPUS)} (add a row to "
                         "compute/gpus.py for another card)")
    return GPUS[name]


def ec2_box(instance_type: str) -> GpuBox | None:
    """The GPUs of an EC2 instance type, None for a family this table does not know."""
    family = instance_type.split(".")[0]
    if family not in EC2_FAMILIES:
        return None
    return GpuBox(GPUS[EC2_FAMILIES[family]], EC2_MULTI_GPU.get(instance_type, 1))


def gce_box(accelerator: str | None, count: int) -> GpuBox | None:
    if accelerator is None or accelerator not in GCE_ACCELERATORS:
        return None
    return GpuBox(GPUS[GCE_ACCELERATORS[accelerator]], count)


def parse_gpu(text: str) -> GpuBox:
    """'H100-80GB' or '8 x H100-80GB' (what `compute.gpu` accepts)."""
    match = re.fullmatch(r"\s*(?:(\d+)\s*x\s*)?(\S+)\s*", text)
    if not match:
        raise ValueError(f"compute.gpu {text!r}: write '<card>' or '<count> x <card>'")
    return GpuBox(gpu_named(match[2]), int(match[1] or 1))
