"""Every training objective, in one table: the kind of dataset it trains on, how Axolotl reads
our normalised rows for it (reshaped first where its trainer wants another layout), the trainer
it selects, and whether an evaluation can score it. Config validation and the Axolotl renderer
(training/axolotl_config.py) read this table; a new objective is a row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol


class Chat(Protocol):
    """The base model's chat template, for trainers that take rendered prompts."""

    def render(self, history: list[dict[str, str]]) -> str: ...
    @property
    def turn_end(self) -> str: ...


def orpo_rows(row: dict[str, Any], chat: Chat) -> list[dict[str, Any]]:
    """Axolotl's ORPO reads whole conversations per side: {system?, chosen: [user, assistant,
    ...], rejected: [...]}; ours keep the shared turns once, the replies as strings."""
    system = [m["content"] for m in row["messages"] if m["role"] == "system"]
    turns = [m for m in row["messages"] if m["role"] != "system"]
    shaped: dict[str, Any] = {side: [*turns, {"role": "assistant", "content": row[side]}]
                              for side in ("chosen", "rejected")}
    return [{**shaped, "system": system[0]}] if system else [shaped]


def kto_rows(row: dict[str, Any], chat: Chat) -> list[dict[str, Any]]:
    """KTO learns from unpaired replies marked desirable or not: a rated reply as it is, a
    preference pair as one of each; the prompt rendered with the base model's chat template."""
    prompt = chat.render(row["messages"])
    rated = ([(row["completion"], row["label"])] if "label" in row
             else [(row["chosen"], True), (row["rejected"], False)])
    return [{"prompt": prompt, "completion": reply + chat.turn_end, "label": label}
            for reply, label in rated]


def grpo_rows(row: dict[str, Any], chat: Chat) -> list[dict[str, Any]]:
    """GRPO samples its own replies: the conversation up to the last reply is the prompt, that
    reply is the reference the graders score against (worker/rewards.py reads both)."""
    *prompt, reply = row["messages"]
    return [{"prompt": prompt, "reference": reply["content"]}]


@dataclass(frozen=True)
class Objective:
    data: tuple[str, ...]  # the `kind`s of dataset it trains on (datasets.<name>.kind)
    reads: dict[str, Any]  # the Axolotl `datasets` entry, less its path, for our rows
    trainer: dict[str, Any] = field(default_factory=dict)  # top-level Axolotl keys it needs
    scored: bool = True  # an evaluation can ask its adapter questions and score the answers
    drops: tuple[str, ...] = ()  # renderer keys its Axolotl trainer cannot take
    description: str = ""
    # rows in the layout its Axolotl trainer reads, from one of ours (None: ours as they are)
    reshape: Callable[[dict[str, Any], Chat], list[dict[str, Any]]] | None = None

    @property
    def packs(self) -> bool:
        """Axolotl packs rows (training.packing) only for trainers without an `rl` loss."""
        return "rl" not in self.trainer


# {"messages": [... user], "chosen": str, "rejected": str}, as Axolotl's DPO-family loaders read it
DPO_READS = {"ds_type": "json", "type": "chat_template.default", "field_messages": "messages",
             "field_chosen": "chosen", "field_rejected": "rejected"}

OBJECTIVES: dict[str, Objective] = {
    # {"messages": [system?, user, assistant, ...]}: the loss on assistant turns only
    "sft": Objective(
        ("sft",), {"ds_type": "json", "type": "chat_template", "field_messages": "messages",
                "roles_to_train": ["assistant"]},
        trainer={"chat_template": "tokenizer_default"},
        description="supervised fine-tuning on chat data"),
    "dpo": Objective(
        ("preference",), DPO_READS, trainer={"rl": "dpo", "chat_template": "tokenizer_default"},
        # Axolotl's DPO path hands the padding multiple to TRL's preference collator, whose
        # batches then lack input_ids: keep its own padding
        drops=("pad_to_multiple_of",),
        description="direct preference optimisation on preference pairs"),
    # the same pairs as DPO, other losses: IPO's squared preference loss (no reward
    # saturation), SimPO's reference-free length-normalised margin (CPO trainer)
    "ipo": Objective(
        ("preference",), DPO_READS, trainer={"rl": "dpo", "dpo_loss_type": ["ipo"],
                                          "chat_template": "tokenizer_default"},
        drops=("pad_to_multiple_of",), description="identity preference optimisation (IPO)"),
    "simpo": Objective(
        # SimPO's target margin as the paper and TRL set it; no behaviour-cloning term (pure
        # SimPO: TRL's cpo_alpha 0)
        ("preference",), DPO_READS, trainer={"rl": "simpo", "simpo_gamma": 0.5, "cpo_alpha": 0.0,
                                          "chat_template": "tokenizer_default"},
        drops=("pad_to_multiple_of",),
        description="simple preference optimisation without a reference model (SimPO)"),
    # SFT and preference in one loss, no reference model
    "orpo": Objective(
        ("preference",), {"ds_type": "json", "type": "chat_template.argilla"},
        trainer={"rl": "orpo", "chat_template": "tokenizer_default"}, reshape=orpo_rows,
        drops=("pad_to_multiple_of",),
        description="odds-ratio preference optimisation (ORPO)"),
    # unpaired replies rated good or bad (a preference pair gives one of each)
    "kto": Objective(
        ("feedback", "preference"), {"ds_type": "json", "type": {
            "field_prompt": "prompt", "field_completion": "completion", "field_label": "label"}},
        trainer={"rl": "kto", "remove_unused_columns": False}, reshape=kto_rows,
        drops=("pad_to_multiple_of",),
        description="Kahneman-Tversky optimisation (KTO) on replies marked good or bad"),
    # sampled replies scored by graders: group-relative policy optimisation (reinforcement)
    "grpo": Objective(
        ("sft",), {"ds_type": "json"}, trainer={"rl": "grpo"}, reshape=grpo_rows,
        drops=("pad_to_multiple_of",),
        description="reinforcement fine-tuning (GRPO): replies sampled and scored by graders"),
    # {"text": str} token blocks
    "cpt": Objective(
        ("pretrain",), {"ds_type": "json", "type": "completion", "field": "text"},
        scored=False,  # text has no questions; its loss curve is in the adapter's metadata
        description="continued pre-training on document text"),
}
