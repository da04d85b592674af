"""Datasets from traffic: what a gateway project kept (stored completions) and what people said
about it, as training rows of the dataset's kind.

- sft: a correction (the reply it should have been), or a reply rated up (thumb up, or a score
  of at least `good_score`), after the conversation it answered;
- feedback (KTO): a thumb gives the reply as desirable or not; a correction gives both the
  correction (desirable) and the reply it corrects (not);
- preference (DPO): `better_than` gives the chosen and the rejected answer to one conversation;
  a correction is chosen over the reply it corrects.

Every row names its source as `traffic:<project>` and its row as the feedback's id, so the
quarantine says which feedback it dropped and why. Read through an export function (the
gateway's admin API: resources/gateway_admin.py), so nothing here opens the gateway's database.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from config.datasets import TrafficSource
from ingest.problems import Rejection
from ingest.sources import RawRecord

# (project, model, since, after feedback id) -> one page of the export
Export = Callable[[str, str | None, float, int], dict[str, Any]]
PREFIX = "traffic:"


def rated_up(feedback: dict[str, Any], good_score: float) -> bool:
    return feedback["rating"] == "up" or (feedback["score"] is not None
                                          and feedback["score"] >= good_score)


def sft_rows(fb: dict[str, Any], good_score: float) -> Iterator[dict[str, Any]]:
    answer = fb["correction"] or (fb["reply"] if rated_up(fb, good_score) else None)
    if answer:
        yield {"messages": [*fb["messages"], {"role": "assistant", "content": answer}]}


def feedback_rows(fb: dict[str, Any], good_score: float) -> Iterator[dict[str, Any]]:
    if fb["correction"]:
        yield {"messages": fb["messages"], "completion": fb["correction"], "label": True}
        yield {"messages": fb["messages"], "completion": fb["reply"], "label": False}
    elif fb["rating"]:
        yield {"messages": fb["messages"], "completion": fb["reply"],
               "label": fb["rating"] == "up"}


def preference_rows(fb: dict[str, Any], good_score: float) -> Iterator[dict[str, Any]]:
    if fb["correction"]:
        yield {"messages": fb["messages"], "chosen": fb["correction"], "rejected": fb["reply"]}
    if fb["better_than"]:
        yield {"messages": fb["messages"], "chosen": fb["reply"],
               "rejected": fb["better_than"]["reply"]}


ROWS: dict[str, Callable[[dict[str, Any], float], Iterator[dict[str, Any]]]] = {
    "sft": sft_rows, "feedback": feedback_rows, "preference": preference_rows}


@dataclass
class GatewayTraffic:
    """Where {traffic} sources are read; remembers what it read (per project: feedback rows
    and the newest feedback id), the dataset's lineage."""

    export: Export
    kind: str
    read: dict[str, dict[str, int]] = field(default_factory=dict)

    def records(self, source: TrafficSource) -> Iterator[RawRecord | Rejection]:
        since = time.time() - source.since_days * 86_400 if source.since_days else 0.0
        make, name = ROWS[self.kind], f"{PREFIX}{source.traffic}"
        after, rows, useless, newest = 0, 0, 0, 0
        while True:
            page = self.export(source.traffic, source.model, since, after)
            for fb in page["data"]:
                rows, newest = rows + 1, max(newest, fb["feedback_id"])
                if any(fb["metadata"].get(k) != v for k, v in source.metadata.items()):
                    continue
                made = list(make(fb, source.good_score))
                useless += not made
                for row in made:
                    yield RawRecord(name, fb["feedback_id"], row)
            if not page["has_more"] or not page["data"]:
                break
            after = page["data"][-1]["feedback_id"]
        self.read[source.traffic] = {"feedback": rows, "newest_id": newest,
                                     "without_rows": useless}
