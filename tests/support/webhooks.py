"""A webhook receiver on 127.0.0.1 for the alert tests: every JSON body POSTed to it, in order."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


class Receiver(BaseHTTPRequestHandler):
    """A webhook receiver: every JSON body POSTed to it, in order."""

    received: list[dict[str, Any]] = []  # noqa: RUF012 (one receiver at a time: a fixture)

    def do_POST(self) -> None:
        length = int(self.headers["content-length"])
        Receiver.received.append({"path": self.path,
                                  "body": json.loads(self.rfile.read(length))})
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    Receiver.received = []
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
