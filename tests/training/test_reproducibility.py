"""A seeded run gives the same model on any machine: worker jobs run with the pinned CPU
kernels (compute/kernels.py), under which the thread count no longer changes a single bit."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from config.schema import FactoryConfig
from pipelines.graph import REPO_ROOT, resources_for

# a few AdamW steps of a small Llama; prints a hash of the final weights
TRAIN = """
import hashlib, sys, torch
from transformers import LlamaConfig, LlamaForCausalLM
torch.set_num_threads(int(sys.argv[1]))
torch.manual_seed(0)
model = LlamaForCausalLM(LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=176,
    num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4))
opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
data = torch.randint(0, 256, (8, 8, 96), generator=torch.Generator().manual_seed(1))
for batch in data:
    model(input_ids=batch, labels=batch).loss.backward()
    opt.step()
    opt.zero_grad()
print(hashlib.sha256(b"".join(p.detach().numpy().tobytes()
                              for p in model.parameters())).hexdigest())
"""


def weights_hash(threads: int, env: dict[str, str]) -> str:
    python = REPO_ROOT / ".venvs" / "train" / "bin" / "python"
    base = {k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "MKL_CBWR")}
    out = subprocess.run([str(python), "-c", TRAIN, str(threads)], env=base | env,
                         capture_output=True, text=True, timeout=300, check=True)
    return out.stdout.split()[-1]


def test_worker_jobs_run_with_the_pinned_kernels_unless_turned_off_and_short_spins() -> None:
    on = FactoryConfig.model_validate({})
    off = FactoryConfig.model_validate({"compute": {"reproducible": False}})
    gpu = FactoryConfig.model_validate({"compute": {"device": "gpu"}})
    assert resources_for(on)["worker"].kernel_env == {"ATEN_CPU_CAPABILITY": "avx2",
                                                     "MKL_CBWR": "AVX2,STRICT",
                                                     "GOMP_SPINCOUNT": "10000"}
    assert resources_for(off)["worker"].kernel_env == {"GOMP_SPINCOUNT": "10000"}
    assert resources_for(gpu)["training"].kernel_env == {}


@pytest.mark.slow
def test_pinned_kernels_train_the_same_weights_with_any_thread_count(tmp_path: Path) -> None:
    env = resources_for(FactoryConfig.model_validate({}))["worker"].kernel_env
    assert len({weights_hash(threads, env) for threads in (1, 2, 3)}) == 1
