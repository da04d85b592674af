"""A worker's Pipes message that the reader sees half-written (an append crossing a page
boundary) is read once whole, instead of ending the reader and losing the job's result."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from resources.compute import WholeLineMessageReader


class Handler:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.errors: list[Any] = []

    def handle_message(self, message: dict[str, Any]) -> None:
        self.messages.append(message)

    def report_pipes_framework_exception(self, origin: str, exc_info: Any) -> None:
        self.errors.append((origin, exc_info))


def test_a_message_read_half_written_is_taken_once_whole() -> None:
    handler = Handler()
    message = json.dumps({"__dagster_pipes_version": "0.1", "method": "log",
                          "params": {"message": "x" * 5000, "level": "INFO"}}) + "\n"
    with WholeLineMessageReader().read_messages(handler) as params:
        path = Path(params["path"])
        with path.open("a") as f:
            f.write(message[:75])
            f.flush()
            time.sleep(0.2)  # the reader sees the first 75 characters alone
            f.write(message[75:])
        with path.open("a") as f:
            f.write(json.dumps({"method": "closed", "params": {}}) + "\n")
    assert not handler.errors
    assert [m["method"] for m in handler.messages] == ["log", "closed"]
    assert handler.messages[0]["params"]["message"] == "x" * 5000
