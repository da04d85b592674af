"""GPU recipes checked on the CPU machine: each training key renders the Axolotl keys GPU users
know, Axolotl's own validation accepts the rendered files as for the GPU box they are meant for
(its capabilities, not this machine's), and what cannot work is refused in factory.yaml's words
before any machine starts."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from compute.gpus import GPUS, GpuBox
from config.adapters import AdapterSpec
from config.loading import ConfigError, load_config
from config.training import TrackingSpec
from training.axolotl_config import RecipeError, render_adapter

REPO = Path(__file__).resolve().parents[2]
TRAIN_PYTHON = REPO / ".venvs" / "train" / "bin" / "python"
LLAMA_1B = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 128256,
            "hidden_size": 2048, "num_hidden_layers": 16, "intermediate_size": 8192,
            "num_attention_heads": 32, "num_key_value_heads": 8, "tie_word_embeddings": True}


def base_folder(tmp_path: Path, config: dict[str, Any] = LLAMA_1B) -> Path:
    folder = tmp_path / f"base-{config['model_type']}"
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def rendered(tmp_path: Path, gpus: int = 1, base: dict[str, Any] = LLAMA_1B,
             **recipe: Any) -> dict[str, Any]:
    spec = AdapterSpec.model_validate({"base_model": "b", "dataset": "d", **recipe})
    graders = [{"type": "metric", "metric": "exact_match", "answer_pattern": None,
                "weight": 1.0}] if spec.objective == "grpo" else None
    return yaml.safe_load(render_adapter(
        spec, base_dir=base_folder(tmp_path, base), train_path=tmp_path / "train.jsonl",
        output_dir=tmp_path / "run", tracking=TrackingSpec(wandb=False), run_name="r",
        target="gpu", gpus=gpus, graders=graders, generation_share=0.1 if graders else None))


def axolotl_problems(files: list[Path], box: GpuBox) -> dict[str, list[dict[str, str]]]:
    """Axolotl 0.19's validate_config on each file, in the training environment, as for `box`."""
    done = subprocess.run([str(TRAIN_PYTHON), "-m", "worker.validate", *map(str, files),
                           "--gpu", json.dumps(box.capabilities())],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_each_key_renders_what_axolotl_reads(tmp_path: Path) -> None:
    packed = rendered(tmp_path, training={"packing": True})
    assert packed["sample_packing"] is True and packed["pad_to_sequence_len"] is True
    assert packed["attn_implementation"] == "sdpa"  # a block-diagonal mask keeps rows apart
    flash = rendered(tmp_path, training={"packing": True, "attention": "flash_attention_2"})
    assert flash["attn_implementation"] == "flash_attention_2"
    checkpointed = rendered(tmp_path, training={"gradient_checkpointing": True})
    assert checkpointed["gradient_checkpointing"] is True
    assert checkpointed["gradient_checkpointing_kwargs"] == {"use_reentrant": False}
    liger = rendered(tmp_path, training={"liger": True})
    assert liger["plugins"] == ["axolotl.integrations.liger.LigerPlugin"]
    assert liger["liger_fused_linear_cross_entropy"] is True
    qlora = rendered(tmp_path, method="qlora", qlora={"compute_dtype": "float16"})
    assert qlora["load_in_4bit"] is True and qlora["adapter"] == "qlora"
    assert qlora["bnb_config_kwargs"] == {"bnb_4bit_compute_dtype": "float16",
                                          "bnb_4bit_quant_type": "nf4",
                                          "bnb_4bit_use_double_quant": True}
    assert qlora["bf16"] == "auto" and qlora["tf32"] is True  # the GPU box's precision keys


def test_several_gpus_shard_as_the_recipe_says(tmp_path: Path) -> None:
    zero3 = rendered(tmp_path, gpus=8, training={"distributed": "zero3"})
    assert zero3["deepspeed"]["zero_optimization"]["stage"] == 3
    assert zero3["deepspeed"]["zero_optimization"][
        "stage3_gather_16bit_weights_on_model_save"] is True  # a whole adapter is saved
    zero2 = rendered(tmp_path, gpus=8, training={"distributed": "zero2"})
    assert zero2["deepspeed"]["zero_optimization"]["stage"] == 2
    fsdp = rendered(tmp_path, gpus=8, training={"distributed": "fsdp2"})
    assert fsdp["fsdp_version"] == 2 and "deepspeed" not in fsdp
    assert fsdp["fsdp_config"]["transformer_layer_cls_to_wrap"] == "LlamaDecoderLayer"
    qlora_fsdp = rendered(tmp_path, gpus=8, method="qlora", training={"distributed": "fsdp2"})
    assert qlora_fsdp["fsdp_config"]["cpu_ram_efficient_loading"] is False
    one = rendered(tmp_path, gpus=1, training={"distributed": "ddp"})
    assert "deepspeed" not in one and "fsdp_config" not in one


def test_liger_and_fsdp_refuse_models_they_cannot_patch(tmp_path: Path) -> None:
    gpt2 = {**LLAMA_1B, "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}
    with pytest.raises(RecipeError, match="Liger has no kernels for gpt2 models"):
        rendered(tmp_path, base=gpt2, training={"liger": True})
    with pytest.raises(RecipeError, match="the base model is a GPT2LMHeadModel; use zero2"):
        rendered(tmp_path, gpus=2, base=gpt2, training={"distributed": "fsdp2"})


@pytest.mark.slow  # imports Axolotl in the training environment
def test_axolotl_validates_the_rendered_gpu_recipes_as_for_their_gpus(tmp_path: Path) -> None:
    recipes = {
        "packed-flash-checkpointed": (1, {"training": {
            "packing": True, "attention": "flash_attention_2",
            "gradient_checkpointing": True, "sequence_len": 2048}}),
        "liger-qlora": (1, {"method": "qlora", "training": {"liger": True}}),
        "zero3-lora": (8, {"training": {"distributed": "zero3"}}),
        "fsdp2-qlora": (8, {"method": "qlora", "training": {"distributed": "fsdp2"}}),
        # GRPO sampling with vLLM on the training card (TRL's colocate mode)
        "grpo-vllm-colocate": (8, {"objective": "grpo", "grpo": {"num_generations": 8},
                                   "training": {"micro_batch_size": 8,
                                                "gradient_accumulation_steps": 8}}),
        # Axolotl's own rule (not ours): FSDP2 cannot load on rank 0 only and quantise to 4 bits
        "fsdp2-qlora-rank0-loading": (8, {"method": "qlora", "training": {
            "distributed": "fsdp2"}, "axolotl": {"fsdp_version": 2, "fsdp_config": {
                "cpu_ram_efficient_loading": True, "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
                "transformer_layer_cls_to_wrap": "LlamaDecoderLayer"}}}),
    }
    files = []
    for name, (gpus, recipe) in recipes.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(rendered(tmp_path, gpus=gpus, **recipe)))
        files.append(path)
    found = axolotl_problems(files, GpuBox(GPUS["H100-80GB"], 8))
    by_name = {Path(f).stem: problems for f, problems in found.items()}
    refused = by_name.pop("fsdp2-qlora-rank0-loading")
    assert by_name == {name: [] for name in by_name}
    assert refused and "cpu_ram_efficient_loading" in refused[0]["message"]


def project(tmp_path: Path, adapter: dict[str, Any], compute: dict[str, Any]) -> None:
    (tmp_path / "factory.yaml").write_text(yaml.safe_dump({
        "base_models": {"b": {"source": "local"}},
        "datasets": {"d": {"sources": [{"generator": "math_word_problems", "rows": 40}]},
                     "p": {"kind": "preference", "sources": [{"path": "pairs"}]}},
        "adapters": {"a": {"base_model": "b", "dataset": "d", **adapter}},
        "compute": compute}))
    load_config(tmp_path / "factory.yaml")


def test_factory_yaml_refuses_what_the_machine_cannot_run(tmp_path: Path) -> None:
    cpu, one_l4 = {"device": "cpu"}, {"device": "gpu", "gpu": "L4"}
    cases = [
        ("adapters.a.training.liger: Liger's kernels are Triton GPU kernels",
         {"training": {"liger": True}}, cpu),
        ("adapters.a.training.attention: flash_attention_2 runs on CUDA only",
         {"training": {"attention": "flash_attention_2"}}, cpu),
        ("adapters.a.training.distributed: zero3 shards over several GPUs but compute gives "
         r"1 x L4 \(22 GiB each\); use ddp", {"training": {"distributed": "zero3"}}, one_l4),
        ("adapters.a.training.packing: dpo trains on pairs or labelled rows that Axolotl does "
         "not pack", {"dataset": "p", "objective": "dpo", "training": {"packing": True}},
         one_l4),
        ("adapters.a.axolotl.attn_implementation: sage would let packed rows attend to each "
         "other", {"training": {"packing": True}, "axolotl": {"attn_implementation": "sage"}},
         one_l4),
        ("adapters.a.qlora.compute_dtype: T4 has no bfloat16; use float16",
         {"method": "qlora"}, {"device": "gpu", "gpu": "T4"}),
        ("adapters.a.training: GRPO on 8 GPUs needs micro_batch_size x "
         "gradient_accumulation_steps >= num_generations x GPUs = 32, got 8",
         {"objective": "grpo", "training": {"micro_batch_size": 8}},
         {"device": "gpu", "gpu": "8 x H200"}),
    ]
    for message, adapter, compute in cases:
        with pytest.raises(ConfigError, match=message):
            project(tmp_path, adapter, compute)
    project(tmp_path, {"training": {"distributed": "zero3"}}, {"device": "gpu", "gpu": "8 x H200"})


def test_a_recipe_that_cannot_fit_fails_before_launch_with_its_numbers(tmp_path: Path) -> None:
    """The adapter asset's check on Llama 3.1 8B's shape: full fine-tuning on one L4 fails
    with the estimate and the changes that fit; QLoRA with checkpointing plans its memory."""
    import dagster as dg

    from assets.adapters import planned_memory

    llama_8b = {**LLAMA_1B, "hidden_size": 4096, "num_hidden_layers": 32,
                "intermediate_size": 14336, "tie_word_embeddings": False}
    base = base_folder(tmp_path, llama_8b)
    (tmp_path / "factory.yaml").write_text(yaml.safe_dump({
        "base_models": {"b": {"source": "local"}},
        "datasets": {"d": {"sources": [{"generator": "math_word_problems", "rows": 40}]}},
        "adapters": {
            "full": {"base_model": "b", "dataset": "d", "method": "full",
                     "training": {"sequence_len": 2048, "micro_batch_size": 4}},
            "small": {"base_model": "b", "dataset": "d", "method": "qlora", "lora": {"r": 16},
                      "training": {"sequence_len": 2048, "micro_batch_size": 1,
                                   "gradient_checkpointing": True}}},
        "compute": {"device": "gpu", "gpu": "L4"}}))
    config = load_config(tmp_path / "factory.yaml")
    context = dg.build_asset_context()
    with pytest.raises(dg.Failure) as refused:
        planned_memory(context, "full", config.adapters["full"], config, base)
    message = str(refused.value.description)
    assert message.startswith("adapters.full needs about ")
    assert "1 x L4 (22 GiB each) leaves 20.9 GiB" in message
    assert "no single change fits 1 x L4" in message  # 8 B parameters x 16 bytes
    planned = planned_memory(context, "small", config.adapters["small"], config, base)
    assert 8 < planned["estimated_gpu_gib"] < 20.9  # type: ignore[operator]
    assert "| weights |" in planned["memory_estimate"].value  # type: ignore[union-attr]


def test_several_gpus_train_under_torchrun() -> None:
    from worker.train import axolotl_command

    one = axolotl_command(Path("axolotl.yaml"), 1)
    assert one[1:] == ["-m", "worker.seeded_axolotl", "train", "axolotl.yaml",
                       "--launcher", "python"]
    eight = axolotl_command(Path("axolotl.yaml"), 8)
    assert eight[1:6] == ["-m", "torch.distributed.run", "--standalone",
                          "--nproc_per_node=8", "-m"]
    assert eight[6:] == one[2:]


# the published shapes of one model per preset (config.json's sizes)
LLAMA_3B = {**LLAMA_1B, "hidden_size": 3072, "num_hidden_layers": 28, "num_attention_heads": 24}
LLAMA_8B = {**LLAMA_1B, "hidden_size": 4096, "num_hidden_layers": 32, "intermediate_size": 14336,
            "tie_word_embeddings": False}
QWEN_14B = {**LLAMA_1B, "model_type": "qwen2", "hidden_size": 5120, "num_hidden_layers": 48,
            "intermediate_size": 13824, "num_attention_heads": 40, "vocab_size": 152064,
            "tie_word_embeddings": False}
LLAMA_70B = {**LLAMA_8B, "hidden_size": 8192, "num_hidden_layers": 80,
             "intermediate_size": 28672, "num_attention_heads": 64}


def test_a_size_preset_fills_the_recipe_and_what_is_set_beside_it_wins() -> None:
    spec = AdapterSpec.model_validate({"base_model": "b", "dataset": "d", "preset": "8b",
                                       "training": {"learning_rate": 3e-4}})
    t = spec.training
    assert (spec.method, spec.lora.r, t.micro_batch_size, t.gradient_accumulation_steps) == (
        "lora", 16, 2, 8)
    assert t.packing and t.gradient_checkpointing and t.learning_rate == 3e-4
    assert AdapterSpec.model_validate({"base_model": "b", "dataset": "d", "preset": "70b"}
                                      ).method == "qlora"
    pairs = AdapterSpec.model_validate({"base_model": "b", "dataset": "d", "preset": "8b",
                                        "objective": "dpo"})
    assert not pairs.training.packing  # DPO's pairs are not packed
    with pytest.raises(ValueError, match="preset"):
        AdapterSpec.model_validate({"base_model": "b", "dataset": "d", "preset": "9b"})


def test_each_size_preset_fits_one_80_gb_card_and_says_what_to_change_on_a_small_one() -> None:
    from assets.adapters import memory_recipe
    from compute.memory import DoesNotFit, ModelShape, check_fits

    h100 = GpuBox(GPUS["H100-80GB"], 1)
    for preset, shape in {"1b": LLAMA_1B, "3b": LLAMA_3B, "8b": LLAMA_8B, "14b": QWEN_14B,
                          "70b": LLAMA_70B}.items():
        spec = AdapterSpec.model_validate({"base_model": "b", "dataset": "d", "preset": preset})
        check_fits(f"adapters.{preset}", ModelShape.from_config(shape), memory_recipe(spec),
                   h100)
    spec = AdapterSpec.model_validate({"base_model": "b", "dataset": "d", "preset": "70b"})
    with pytest.raises(DoesNotFit, match="L4"):
        check_fits("adapters.big", ModelShape.from_config(LLAMA_70B), memory_recipe(spec),
                   GpuBox(GPUS["L4"], 1))
