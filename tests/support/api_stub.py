"""The base of the local HTTP servers that stand in for remote APIs no test can reach here
(the KFP API, the Kubernetes API): a loopback server on a free port, serving in a thread,
with JSON replies. Each stub implements `handle(method)` on its handler."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class ApiStub(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, handler: type["JsonHandler"]):
        super().__init__(("127.0.0.1", 0), handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class JsonHandler(BaseHTTPRequestHandler):
    def reply(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def handle_method(self, method: str) -> None:
        raise NotImplementedError

    def do_GET(self) -> None:  # noqa: N802
        self.handle_method("GET")

    def do_POST(self) -> None:  # noqa: N802
        self.handle_method("POST")

    def do_PATCH(self) -> None:  # noqa: N802
        self.handle_method("PATCH")

    def log_message(self, format, *args) -> None:  # noqa: A002
        pass
