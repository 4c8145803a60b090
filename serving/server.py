"""HTTP for the prediction service: TF Serving REST, Open Inference Protocol v2, feedback, metrics.

Built on the standard library's threading HTTP server with HTTP/1.1 keep-alive and
orjson: a single-row prediction costs about 1 ms in TensorFlow, so a thread per
connection is not the bottleneck at the rates one replica serves, and the service adds
no web framework whose pins could fight TensorFlow's (see README, "Prediction service").
"""

from __future__ import annotations

import logging
import re
import socket
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

import orjson

from serving.canary.journal import OutcomeJournal
from serving.service import PredictionService, ServiceError

log = logging.getLogger(__name__)

NAME = r"(?P<name>[A-Za-z0-9_.-]+)"
TARGET = r"(?:/versions/(?P<version>\d+)|/labels/(?P<label>[A-Za-z0-9_-]+))?"
V2_VERSION = r"(?:/versions/(?P<version>\d+))?"
DEFAULT_PERFORMANCE_WINDOW = 1000


def _version(match: re.Match) -> int | None:
    value = match.groupdict().get("version")
    return int(value) if value else None


def _last(query: dict[str, list[str]]) -> int:
    """`?last=N`: how many of the latest labelled predictions an online metric covers."""
    text = query.get("last", [str(DEFAULT_PERFORMANCE_WINDOW)])[-1]
    if not text.isdigit() or not 0 < int(text) <= OutcomeJournal.RECENT:
        raise ServiceError(400, f"last={text!r}: expected a whole number from 1 to {OutcomeJournal.RECENT}")
    return int(text)


class Routes:
    """Path patterns -> handlers `(service, match, body, request) -> (status, payload)`; `request`
    has the headers and the query parameters."""

    def __init__(self):
        self.get: list[tuple[re.Pattern, Callable]] = []
        self.post: list[tuple[re.Pattern, Callable]] = []

    def add(self, method: str, pattern: str, handler: Callable) -> None:
        getattr(self, method).append((re.compile(pattern + r"$"), handler))

    def find(self, method: str, path: str):
        for pattern, handler in getattr(self, method):
            match = pattern.match(path)
            if match:
                return handler, match
        return None, None


ROUTES = Routes()
ROUTES.add("get", rf"/v1/models/{NAME}{TARGET}", lambda s, m, b, h: (200, s.status(m["name"], _version(m), m["label"])))
ROUTES.add(
    "get",
    rf"/v1/models/{NAME}{TARGET}/metadata",
    lambda s, m, b, h: (200, s.metadata(m["name"], _version(m), m["label"])),
)
ROUTES.add("get", rf"/v1/models/{NAME}/performance", lambda s, m, b, h: (200, s.performance(m["name"], _last(h.query))))
ROUTES.add(
    "post",
    rf"/v1/models/{NAME}{TARGET}:predict",
    lambda s, m, b, h: (200, s.predict(m["name"], b, _version(m), m["label"], h.headers.get("X-Request-Key"))),
)
ROUTES.add("post", rf"/v1/models/{NAME}:feedback", lambda s, m, b, h: (200, s.feedback(m["name"], b)))
ROUTES.add("get", r"/v2/health/live", lambda s, m, b, h: (200, {"live": True}))
ROUTES.add("get", r"/v2/health/ready", lambda s, m, b, h: (200 if s.ready() else 503, {"ready": s.ready()}))
ROUTES.add("get", rf"/v2/models/{NAME}{V2_VERSION}", lambda s, m, b, h: (200, s.v2_model(m["name"], _version(m))))
ROUTES.add(
    "get",
    rf"/v2/models/{NAME}{V2_VERSION}/ready",
    lambda s, m, b, h: (
        (200, {"name": m["name"], "ready": True})
        if s.ready(m["name"], _version(m))
        else (503, {"name": m["name"], "ready": False})
    ),
)
ROUTES.add(
    "post",
    rf"/v2/models/{NAME}{V2_VERSION}/infer",
    lambda s, m, b, h: (200, s.infer(m["name"], b, _version(m), h.headers.get("X-Request-Key"))),
)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "PredictionServer"

    def setup(self) -> None:
        super().setup()
        # Headers and body leave in two writes; without this, Nagle's algorithm holds the
        # body until the client's delayed ACK (up to 40 ms on Linux) for every response.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        if self.path.split("?")[0] == "/metrics":
            self._send(
                200,
                self.server.service.metrics.render(self.server.service.online_features).encode(),
                "text/plain; version=0.0.4",
            )
            return
        self._dispatch("get", None)

    def do_POST(self) -> None:  # noqa: N802
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            self._error(411, "a Content-Length header is required")
            self.close_connection = True
            return
        if int(length) > self.server.service.config.max_body_bytes:
            self._error(413, f"body of {length} bytes is over the limit of {self.server.service.config.max_body_bytes}")
            self.close_connection = True
            return
        raw = self.rfile.read(int(length))
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as error:
            self._error(400, f"malformed JSON: {error}")
            return
        self._dispatch("post", body)

    @property
    def query(self) -> dict[str, list[str]]:
        return urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)

    def _dispatch(self, method: str, body: Any) -> None:
        path = self.path.split("?")[0]
        handler, match = ROUTES.find(method, path)
        if handler is None:
            other = "post" if method == "get" else "get"
            if ROUTES.find(other, path)[0] is not None:
                self._error(405, f"{method.upper()} is not allowed on {path}")
            else:
                self._error(404, f"no such endpoint: {method.upper()} {path}")
            return
        try:
            status, payload = handler(self.server.service, match, body, self)
        except ServiceError as error:
            self._error(error.status, str(error))
            return
        except Exception as error:  # never let a request take the server down; say what failed
            log.exception("unexpected error on %s %s", method.upper(), path)
            self._error(500, f"internal error: {type(error).__name__}")
            return
        self._send(status, orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY), "application/json")

    def _error(self, status: int, message: str) -> None:
        self._send(status, orjson.dumps({"error": message}), "application/json")

    def _send(self, status: int, data: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (http.server's signature)
        log.debug("%s " + format, self.address_string(), *args)


class PredictionServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], service: PredictionService):
        super().__init__(address, Handler)
        self.service = service

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"
