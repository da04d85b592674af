"""Every training objective, in one table: the kind of dataset it trains on, how Axolotl reads
our normalised rows for it, the trainer it selects, and whether an evaluation can score it.
Config validation and the Axolotl renderer (assets/axolotl_config.py) read this table; a new
objective is a row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Objective:
    data: str  # the `kind` of dataset it trains on (datasets.<name>.kind)
    reads: dict[str, Any]  # the Axolotl `datasets` entry, less its path, for our rows
    trainer: dict[str, Any] = field(default_factory=dict)  # top-level Axolotl keys it needs
    scored: bool = True  # an evaluation can ask its adapter questions and score the answers
    drops: tuple[str, ...] = ()  # renderer keys its Axolotl trainer cannot take
    description: str = ""


OBJECTIVES: dict[str, Objective] = {
    # {"messages": [system?, user, assistant, ...]}: the loss on assistant turns only
    "sft": Objective(
        "sft", {"ds_type": "json", "type": "chat_template", "field_messages": "messages",
                "roles_to_train": ["assistant"]},
        trainer={"chat_template": "tokenizer_default"},
        description="supervised fine-tuning on chat data"),
    # {"messages": [... user], "chosen": str, "rejected": str}
    "dpo": Objective(
        "preference", {"ds_type": "json", "type": "chat_template.default",
                       "field_messages": "messages", "field_chosen": "chosen",
                       "field_rejected": "rejected"},
        trainer={"rl": "dpo", "chat_template": "tokenizer_default"},
        # Axolotl's DPO path hands the padding multiple to TRL's preference collator, whose
        # batches then lack input_ids: keep its own padding
        drops=("pad_to_multiple_of",),
        description="direct preference optimisation on preference pairs"),
    # {"text": str} token blocks
    "cpt": Objective(
        "pretrain", {"ds_type": "json", "type": "completion", "field": "text"},
        scored=False,  # text has no questions; its loss curve is in the adapter's metadata
        description="continued pre-training on document text"),
}
