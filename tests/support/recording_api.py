"""An HTTP API stand-in on 127.0.0.1 for the clients our code drives (cloud, Kubernetes and
model-server APIs): every request is recorded with its JSON body and its headers, and `route`
(a subclass's) answers it."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class RecordingServer(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), RecordingHandler)
        self.requests: list[tuple[str, str, Any]] = []
        self.headers: list[dict[str, str]] = []  # of each request, in the order received

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def route(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        """(status, JSON answer) for a request to `path` (without its query string)."""
        raise NotImplementedError


class RecordingHandler(BaseHTTPRequestHandler):
    server: RecordingServer

    def log_message(self, *args: Any) -> None:
        pass

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        self.server.requests.append((self.command, self.path, body))
        self.server.headers.append({k.lower(): v for k, v in self.headers.items()})
        code, answer = self.server.route(self.command, self.path.split("?")[0], body)
        data = json.dumps(answer).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _handle
