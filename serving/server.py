"""HTTP for the prediction service: TF Serving REST, Open Inference Protocol v2, feedback, metrics.

Built on the standard library's threading HTTP server with HTTP/1.1 keep-alive and
orjson: a single-row prediction costs about 1 ms in TensorFlow, so a thread per
connection is not the bottleneck at the rates one replica serves, and the service adds
no web framework whose pins could fight TensorFlow's (see README, "Prediction service").

Bounded against a hostile or careless client (ServingConfig): open connections (beyond
them, a 503 and close), requests parsed and scored at once (beyond them, a wait, then a
503 with Retry-After; health and metrics never wait), body size, idle time on a
connection, and a listen backlog for bursts. Every answer is JSON, http.server's own
errors included, but v2 outputs a client asked for as binary tensor data (serving/v2_binary.py).
"""

from __future__ import annotations

import io
import logging
import re
import socket
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

import orjson

from serving import v2_binary
from serving.canary.journal import OutcomeJournal
from serving.config import LISTEN_BACKLOG
from serving.service import FEEDBACK_NEEDS_TOKEN, PredictionService, ServiceError
from serving.workers import SharedConnections

log = logging.getLogger(__name__)

NAME = r"(?P<name>[A-Za-z0-9_.-]+)"
TARGET = r"(?:/versions/(?P<version>\d{1,18})|/labels/(?P<label>[A-Za-z0-9_-]{1,64}))?"
V2_VERSION = r"(?:/versions/(?P<version>\d{1,18}))?"
RETRY_AFTER_SECONDS = 1
# How long a worker at its connection limit leaves a new connection to another worker with room
# (serving/workers.py) before it takes it and answers 503.
HANDOFF_SECONDS = 0.05
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


def _health(service: PredictionService) -> tuple[int, dict[str, Any]]:
    health = service.health()
    return (200 if health["ready"] else 503), health


class Routes:
    """Path patterns -> handlers `(service, match, body, request) -> (status, payload)`; `request`
    has the headers and the query parameters; `payload` is JSON-ready or a `v2_binary.BinaryResponse`."""

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
ROUTES.add(
    "post",
    rf"/v1/models/{NAME}:feedback",
    lambda s, m, b, h: (200, s.feedback(m["name"], b, h.headers.get("Authorization"))),
)
ROUTES.add("get", r"/v2/health/live", lambda s, m, b, h: (200, {"live": True}))
ROUTES.add("get", r"/v2/health/ready", lambda s, m, b, h: _health(s))
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
    lambda s, m, b, h: (
        200,
        v2_binary.encode_response(b, s.infer(m["name"], b, _version(m), h.headers.get("X-Request-Key"))),
    ),
)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Responses are buffered, and http.server flushes the buffer after each request: status,
    # headers and body leave in one write rather than two, and the client wakes once.
    wbufsize = io.DEFAULT_BUFFER_SIZE
    server: "PredictionServer"

    def setup(self) -> None:
        self.timeout = self.server.service.config.idle_seconds  # a silent client is let go
        super().setup()
        # A response larger than the write buffer, or one after a 100 Continue, leaves in two
        # writes; without this, Nagle's algorithm holds the second until the client's delayed
        # ACK (up to 40 ms on Linux).
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def handle_expect_100(self) -> bool:
        """`Expect: 100-continue`: the interim answer leaves at once, not with the final one
        (responses are buffered), since the client waits for it before it sends the body."""
        answered = super().handle_expect_100()
        self.wfile.flush()
        return answered

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        if self.path.split("?")[0] == "/metrics":
            self._send(200, self.server.service.render_metrics().encode(), "text/plain; version=0.0.4")
            return
        self._dispatch("get", None)

    def do_POST(self) -> None:  # noqa: N802
        config = self.server.service.config
        given = self.headers.get("Content-Length", "")
        length = v2_binary.byte_count(given)
        if length is None or "Transfer-Encoding" in self.headers:
            self.close_connection = True
            self._error(411, "a Content-Length header with the body's size in bytes is required")
            return
        if length > config.max_body_bytes:
            self.close_connection = True
            self._error(413, f"body of {given[:40]} bytes is over the limit of {config.max_body_bytes}")
            return
        if self.path.split("?")[0].endswith(":feedback") and not self.server.service.may_send_feedback(
            self.headers.get("Authorization")
        ):
            self.close_connection = True  # refused before its body is read or a slot is taken
            self._error(401, FEEDBACK_NEEDS_TOKEN)
            return
        if not self.server.slots.acquire(timeout=config.queue_seconds):
            self.server.service.metrics.shed("busy")
            self.close_connection = True  # the body was not read
            self._error(503, "too many requests at once: retry shortly", {"Retry-After": str(RETRY_AFTER_SECONDS)})
            return
        try:
            raw = self.rfile.read(length)
            if len(raw) < length:
                self.close_connection = True
                self._error(400, f"the body ended after {len(raw)} of {length} bytes")
                return
            header_length = self.headers.get(v2_binary.HEADER_LENGTH)
            try:
                body = orjson.loads(raw) if header_length is None else v2_binary.decode_request(raw, header_length)
            except orjson.JSONDecodeError as error:
                self._error(400, f"malformed JSON: {error}")
                return
            except ServiceError as error:  # the binary tensor data extension's framing
                self._error(error.status, str(error))
                return
            del raw
            self._dispatch("post", body)
        finally:
            self.server.slots.release()

    def _not_allowed(self) -> None:
        self._error(405, f"{self.command} is not allowed: the service answers GET and POST", {"Allow": "GET, POST"})

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _not_allowed  # noqa: N815

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own errors (a malformed request line, oversized headers, an unknown
        method) as JSON like every other answer, and the connection closed after them."""
        self.close_connection = True
        self._error(code, message or self.responses.get(code, ("error",))[0])

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
                self._error(404, f"no such endpoint: {method.upper()} {path[:200]}")
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
        if isinstance(payload, v2_binary.BinaryResponse):
            headers = {v2_binary.HEADER_LENGTH: str(payload.header_length)}
            self._send(status, payload.body, v2_binary.BINARY_CONTENT_TYPE, headers)
            return
        self._send(status, orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY), "application/json")

    def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        self._send(status, orjson.dumps({"error": message}), "application/json", headers)

    def _send(self, status: int, data: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (http.server's signature)
        log.debug("%s " + format, self.address_string(), *args)


BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
    b"Connection: close\r\nContent-Length: 38\r\n\r\n"
    b'{"error": "too many connections open"}'
)


class PredictionServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = LISTEN_BACKLOG

    def __init__(
        self,
        address: tuple[str, int],
        service: PredictionService,
        listening: socket.socket | None = None,
        peers: SharedConnections | None = None,
    ):
        """Binds `address`, or with `listening` accepts on that socket instead (a worker's,
        serving/workers.py, recording its open connections in `peers`)."""
        super().__init__(address, Handler, bind_and_activate=listening is None)
        if listening is not None:
            self.socket.close()
            self.socket = listening
            # Every worker is woken by a new connection and one takes it: a blocking accept
            # would leave the others waiting there for the next one, deaf to a shutdown.
            listening.setblocking(False)
            self.server_address = listening.getsockname()
        self.peers = peers
        self.service = service
        self.slots = threading.BoundedSemaphore(service.config.max_concurrent_requests)
        self._connections = 0
        self._connections_lock = threading.Lock()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        self._share_count()  # accepting from now on: until then the supervisor says it is not
        super().serve_forever(poll_interval)

    def get_request(self) -> tuple[socket.socket, Any]:
        """Accepts a connection. Every worker sharing the socket is woken by it and any may
        take it: one at its connection limit first leaves it for `HANDOFF_SECONDS` while
        another has room, and takes it at once (to answer 503) when none has. The accept
        fails (socketserver drops the attempt) when another worker took the connection meanwhile."""
        limit = self.service.config.max_connections
        if self.peers is not None and self._connections >= limit and self.peers.room_elsewhere(limit):
            time.sleep(HANDOFF_SECONDS)
        return super().get_request()

    def process_request(self, request, client_address) -> None:
        """A thread per connection up to `max_connections`; beyond, a 503 from the accepting thread."""
        with self._connections_lock:
            admitted = self._connections < self.service.config.max_connections
            if admitted:
                self._connections += 1
                self._share_count()
        if admitted:
            super().process_request(request, client_address)
            return
        self.service.metrics.shed("connections")
        try:
            request.settimeout(1.0)
            request.sendall(BUSY)
        except OSError:
            pass
        self.shutdown_request(request)

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._connections_lock:
                self._connections -= 1
                self._share_count()

    def _share_count(self) -> None:
        if self.peers is not None:
            self.peers.record(self._connections)

    def drain(self, seconds: float) -> bool:
        """Waits until no request is being scored, at most `seconds`; True when none is."""
        deadline = time.monotonic() + seconds
        taken = 0
        try:
            for _ in range(self.service.config.max_concurrent_requests):
                if not self.slots.acquire(timeout=max(0.0, deadline - time.monotonic())):
                    return False
                taken += 1
            return True
        finally:
            for _ in range(taken):
                self.slots.release()
