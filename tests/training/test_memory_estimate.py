"""The GPU memory and step-time estimate a recipe is checked against before any machine starts,
on the shapes of real models (Llama 3.2 1B and Llama 3.1 8B, from their config.json)."""

from __future__ import annotations

import pytest

from compute.gpus import GPUS, GpuBox, ec2_box, gce_box, parse_gpu
from compute.memory import DoesNotFit, ModelShape, Recipe, check_fits, estimate

LLAMA_1B = ModelShape.from_config({  # meta-llama/Llama-3.2-1B config.json
    "model_type": "llama", "vocab_size": 128256, "hidden_size": 2048, "num_hidden_layers": 16,
    "intermediate_size": 8192, "num_attention_heads": 32, "num_key_value_heads": 8,
    "head_dim": 64, "tie_word_embeddings": True})
LLAMA_8B_CONFIG = {  # meta-llama/Llama-3.1-8B config.json
    "model_type": "llama", "vocab_size": 128256, "hidden_size": 4096, "num_hidden_layers": 32,
    "intermediate_size": 14336, "num_attention_heads": 32, "num_key_value_heads": 8,
    "tie_word_embeddings": False}
LLAMA_8B = ModelShape.from_config(LLAMA_8B_CONFIG)


def box(card: str, count: int = 1) -> GpuBox:
    return GpuBox(GPUS[card], count)


def test_parameter_counts_match_the_published_sizes() -> None:
    assert LLAMA_1B.parameters == pytest.approx(1.236e9, rel=0.002)
    assert LLAMA_8B.parameters == pytest.approx(8.030e9, rel=0.002)


def test_lora_trains_what_peft_would() -> None:
    """r=16 on every linear layer of Llama 3.1 8B: PEFT reports 41,943,040 trainable."""
    found = estimate(LLAMA_8B, Recipe("lora", 2048, 1, lora_r=16), box("H100-80GB"))
    assert found.trainable == 41_943_040


def test_an_8b_full_fine_tune_does_not_fit_one_h100_and_says_what_would() -> None:
    recipe = Recipe("full", sequence_len=2048, micro_batch_size=4)
    with pytest.raises(DoesNotFit) as refused:
        check_fits("adapters.big", LLAMA_8B, recipe, box("H100-80GB"))
    message = str(refused.value)
    assert message.startswith("adapters.big needs about 1")  # 100+ GiB
    assert "1 x H100-80GB (79.1 GiB each) leaves 75.1 GiB" in message
    assert "gradients + optimizer 104.7 GiB" in message  # 14 bytes x 8.03 B
    assert "method: lora ->" in message
    # eight cards: ZeRO-3 shards weights, gradients and optimizer states
    with pytest.raises(DoesNotFit) as on_eight:
        check_fits("adapters.big", LLAMA_8B, recipe, box("H100-80GB", 8))
    assert "training.distributed: zero3 ->" in str(on_eight.value)
    sharded = estimate(LLAMA_8B, Recipe("full", 2048, 4, distributed="zero3",
                                        gradient_checkpointing=True), box("H100-80GB", 8))
    assert sharded.fits and sharded.total_gib < 40


def test_qlora_puts_an_8b_model_on_a_24_gb_card() -> None:
    lora = Recipe("lora", 2048, 1, lora_r=16, gradient_checkpointing=True)
    assert not estimate(LLAMA_8B, lora, box("L4")).fits  # 15 GiB of bf16 weights and more
    qlora = estimate(LLAMA_8B, Recipe("qlora", 2048, 1, lora_r=16,
                                      gradient_checkpointing=True), box("L4"))
    assert qlora.fits
    assert 4.5 < qlora.weights_gib < 6  # NF4 linear layers, bf16 embeddings and head


def test_checkpointing_and_liger_shrink_what_they_should() -> None:
    plain = Recipe("lora", 2048, 8, lora_r=16)
    base = estimate(LLAMA_1B, plain, box("L4"))
    checkpointed = estimate(LLAMA_1B, Recipe("lora", 2048, 8, lora_r=16,
                                             gradient_checkpointing=True), box("L4"))
    fused = estimate(LLAMA_1B, Recipe("lora", 2048, 8, lora_r=16, liger=True), box("L4"))
    assert checkpointed.activations_gib < base.activations_gib / 5
    assert checkpointed.flops_per_step > base.flops_per_step  # the forward pass again
    assert fused.loss_gib == 0 < base.loss_gib  # 128k-entry vocabulary: the logits dominate
    assert base.weights_gib == checkpointed.weights_gib == fused.weights_gib


def test_the_step_time_scales_with_the_cards_peak() -> None:
    recipe = Recipe("lora", 2048, 4, gradient_accumulation_steps=4, lora_r=16)
    h100 = estimate(LLAMA_8B, recipe, box("H100-80GB")).seconds_per_step()
    a100 = estimate(LLAMA_8B, recipe, box("A100-80GB")).seconds_per_step()
    assert a100 / h100 == pytest.approx(989 / 312)
    assert estimate(LLAMA_8B, recipe, box("H100-80GB")).tokens_per_step == 4 * 2048 * 4


def test_machines_name_their_gpus() -> None:
    assert ec2_box("g5.xlarge") == box("A10G")
    assert ec2_box("p5.48xlarge") == box("H100-80GB", 8)
    assert ec2_box("m7i.large") is None  # no GPU this table knows
    assert gce_box("nvidia-l4", 2) == box("L4", 2)
    assert parse_gpu("4 x A100-80GB") == box("A100-80GB", 4)
    with pytest.raises(ValueError, match="unknown GPU 'B300'; known: T4, "):
        parse_gpu("B300")


def test_grpo_reserves_the_share_of_the_card_its_colocated_vllm_needs() -> None:
    """Llama 3.2 1B sampling 8 replies of 1,024 tokens a step: vLLM needs bf16 weights (2.5 GB)
    and 8,192 tokens of KV cache (32 KiB each), 20 % more and 1 GiB: about 4.1 GiB, 0.10 of an
    H100 once rounded up to TRL's 0.05 steps, and the whole share is taken from the card."""
    plain = Recipe("lora", 1024, 8, lora_r=16)
    sampled = Recipe("lora", 1024, 8, lora_r=16, generation=True)
    without, with_vllm = (estimate(LLAMA_1B, r, box("H100-80GB")) for r in (plain, sampled))
    assert without.generation_gib == 0 and without.reserved_gib == 0
    assert with_vllm.generation_gib == pytest.approx(4.06, abs=0.01)
    assert with_vllm.generation_share == 0.10
    assert with_vllm.reserved_gib == pytest.approx(0.10 * GPUS["H100-80GB"].memory_gib)
    assert with_vllm.total_gib == pytest.approx(without.total_gib + with_vllm.reserved_gib)
    assert with_vllm.rows()["generation (vLLM colocated)"].startswith(
        "7.9 GiB reserved (gpu_memory_utilization 0.10) for 4.1 GiB needed")
    # vLLM starts only with room for one sequence of the model's whole context: 128k tokens of
    # Llama 3.1 8B's cache (128 KiB each) are 16 GiB however short the replies
    long_context = ModelShape.from_config({**LLAMA_8B_CONFIG, "max_position_embeddings": 131072})
    short = Recipe("lora", 512, 4, lora_r=16, generation=True)
    assert estimate(long_context, short, box("H100-80GB")).generation_gib == pytest.approx(
        1.2 * (2 * long_context.parameters / 2**30 + 16) + 1, abs=0.01)
    # an 8B model's generation does not fit beside full training on one card; the error says so
    with pytest.raises(DoesNotFit, match=r"generation \(vLLM colocated\) \d+\.\d GiB reserved"):
        check_fits("adapters.rl", LLAMA_8B, Recipe("full", 1024, 8, generation=True),
                   box("H100-80GB"))
