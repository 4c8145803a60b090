"""The prediction service over HTTP on loopback: both client APIs, bad requests, metrics, online performance."""

from __future__ import annotations

import json
import re
import shutil
import socket
import time
from types import SimpleNamespace

import pytest

from serving import server as server_module
from serving.config import ServingConfig
from serving.request_log import ParquetLog, read_log
from serving.server import HANDOFF_SECONDS, PredictionServer
from serving.workers import SharedConnections
from tests.support.serving_helpers import FEEDBACK, MODEL, call, metrics_text, traffic_with_feedback, wait_for


def test_tf_serving_rest_api(serve, rows):
    server, *_ = serve()
    assert call(server, f"/v1/models/{MODEL}") == (
        200,
        {
            "model_version_status": [
                {
                    "version": "1",
                    "state": "AVAILABLE",
                    "status": {"error_code": "OK", "error_message": ""},
                    "label": "stable",
                }
            ]
        },
    )
    status, meta = call(server, f"/v1/models/{MODEL}/metadata")
    signature = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert status == 200 and signature["inputs"]["carrier"]["dtype"] == "DT_STRING"
    assert signature["outputs"]["probability"]["dtype"] == "DT_FLOAT"
    status, single = call(server, f"/v1/models/{MODEL}:predict", {"instances": rows[:1]})
    assert status == 200 and len(single["predictions"]) == 1 and 0 < single["predictions"][0] < 1
    status, batch = call(server, f"/v1/models/{MODEL}/versions/1:predict", {"instances": rows[:100]})
    assert status == 200 and len(batch["predictions"]) == 100 and batch["model_version"] == "1"
    assert batch["predictions"][0] == pytest.approx(single["predictions"][0], abs=1e-6)
    columns = {name: [row[name] for row in rows[:3]] for name in rows[0]}
    status, columnar = call(server, f"/v1/models/{MODEL}/labels/stable:predict", {"inputs": columns})
    assert status == 200 and columnar["outputs"] == pytest.approx(batch["predictions"][:3], abs=1e-6)


def test_open_inference_protocol_v2(serve, rows):
    server, *_ = serve()
    assert call(server, "/v2/health/live") == (200, {"live": True})
    assert call(server, "/v2/health/ready") == (200, {"ready": True})
    assert call(server, f"/v2/models/{MODEL}/ready") == (200, {"name": MODEL, "ready": True})
    assert call(server, f"/v2/models/{MODEL}/versions/9/ready") == (503, {"name": MODEL, "ready": False})
    status, model = call(server, f"/v2/models/{MODEL}")
    assert status == 200 and model["versions"] == ["1"]
    assert {"name": "carrier", "datatype": "BYTES", "shape": [-1]} in model["inputs"]
    datatypes = {i["name"]: i["datatype"] for i in model["inputs"]}
    tensors = [{"name": n, "shape": [2], "datatype": datatypes[n], "data": [r[n] for r in rows[:2]]} for n in rows[0]]
    status, result = call(server, f"/v2/models/{MODEL}/infer", {"id": "abc", "inputs": tensors})
    assert status == 200 and result["id"] == "abc" and result["model_version"] == "1"
    [output] = result["outputs"]
    assert output["name"] == "probability" and output["shape"] == [2] and len(output["data"]) == 2


@pytest.mark.parametrize(
    "path, body, raw, status, message",
    [
        ("/v1/models/flight-delay:predict", None, b"{not json", 400, "malformed JSON"),
        ("/v1/models/flight-delay:predict", {"rows": []}, None, 400, 'either "instances" or "inputs"'),
        (
            "/v1/models/flight-delay:predict",
            {"instances": [{"carrier": "UA"}]},
            None,
            400,
            "feature 'day_of_week': missing",
        ),
        ("/v1/models/flight-delay:predict", {"instances": "UA"}, None, 400, '"instances" must be a list of objects'),
        ("/v1/models/flight-delay:predict", {"instances": []}, None, 400, "no instances"),
        ("/v1/models/other:predict", {"instances": [{}]}, None, 404, "model 'other' is not served here"),
        ("/v1/models/flight-delay/versions/7:predict", {"instances": [{}]}, None, 404, "version 7 is not being served"),
        ("/v1/models/flight-delay/labels/beta:predict", {"instances": [{}]}, None, 400, "unknown label 'beta'"),
        ("/v1/models/flight-delay/labels/canary:predict", {"instances": [{}]}, None, 404, "has no canary version now"),
        (
            "/v1/models/flight-delay:feedback",
            {"feedback": [{"request_id": "x", "label": 2}]},
            None,
            400,
            "feedback 0: expected",
        ),
        ("/v2/models/flight-delay/infer", {"inputs": []}, None, 400, 'non-empty "inputs" list'),
        ("/v1/models/flight-delay:explain", {"instances": [{}]}, None, 404, "no such endpoint"),
    ],
)
def test_bad_requests_get_a_4xx_that_names_the_problem(serve, path, body, raw, status, message):
    server, service, *_ = serve()
    got, payload = call(server, path, body, raw=raw, headers=FEEDBACK)
    assert got == status and message in payload["error"], payload


def test_wrong_types_and_unknown_features_are_named(serve, rows):
    server, *_ = serve()
    status, payload = call(server, f"/v1/models/{MODEL}:predict", {"instances": [{**rows[0], "distance": "far"}]})
    assert status == 400 and payload["error"] == "feature 'distance': expected a number, got 'far'"
    status, payload = call(server, f"/v1/models/{MODEL}:predict", {"instances": [{**rows[0], "tailnum": "N1"}]})
    assert status == 400 and payload["error"] == "instance 0: unknown feature(s) ['tailnum']"
    tensors = [{"name": "carrier", "datatype": "FP32", "data": [1.0]}]
    status, payload = call(server, f"/v2/models/{MODEL}/infer", {"inputs": tensors})
    assert status == 400 and payload["error"] == "feature 'carrier': datatype FP32, expected BYTES"


def test_oversized_body_and_wrong_method(serve):
    server, *_ = serve(ServingConfig(max_body_bytes=1000))
    status, payload = call(server, f"/v1/models/{MODEL}:predict", raw=b"{" + b" " * 2000 + b"}")
    assert status == 413 and "over the limit of 1000" in payload["error"]
    huge = f"POST /v1/models/{MODEL}:predict HTTP/1.1\r\nContent-Length: {'9' * 5000}\r\n\r\n"
    status, payload, _ = exchange(server, huge.encode())  # more digits than int() parses
    assert status == 413 and "over the limit of 1000" in payload["error"]
    status, payload = call(server, f"/v1/models/{MODEL}:predict")
    assert status == 405


def test_request_log_and_metrics(serve, rows, tmp_path):
    server, service, *_ = serve(ServingConfig(poll_seconds=0.05, request_log_rotate_rows=50))
    for row in rows[:120]:
        call(server, f"/v1/models/{MODEL}:predict", {"instances": [row]})
    service.request_log.flush()
    logged = read_log(tmp_path / "request_log")
    assert len(logged) == 120
    assert {"carrier", "temp", "prediction", "model_version", "request_id", "logged_at"} <= set(logged.columns)
    assert len(service.request_log.files()) == 3  # 50 + 50 + the flushed 20
    metrics = metrics_text(server)
    assert 'ct_requests_total{model="flight-delay",version="1",api="tfserving"} 120' in metrics
    assert 'ct_request_latency_ms_count{model="flight-delay",version="1"} 120' in metrics


def test_performance_reports_online_metrics(serve, rows):
    server, service, *_ = serve()
    traffic_with_feedback(server, rows[:100], canary_good=True)
    status, performance = call(server, f"/v1/models/{MODEL}/performance")
    assert status == 200 and performance["stable"]["labelled"] == 100 and performance["stable"]["auc"] == 1.0


def exchange(server, request: bytes, half_close: bool = False, seconds: float = 5.0) -> tuple[int, dict, bytes]:
    """Sends raw bytes on a fresh connection; returns the status, the JSON body and the headers."""
    with socket.create_connection(server.server_address[:2], timeout=seconds) as connection:
        connection.sendall(request)
        if half_close:
            connection.shutdown(socket.SHUT_WR)
        return _response(connection)


def _response(connection: socket.socket) -> tuple[int, dict, bytes]:
    """Reads one answer (until its Content-Length, or the connection's end): its status, JSON body and headers."""
    received = b""
    while b"\r\n\r\n" not in received or len(received.split(b"\r\n\r\n", 1)[1]) < _length(received):
        chunk = connection.recv(65536)
        if not chunk:
            break
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body), head


def _length(received: bytes) -> int:
    for line in received.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":")[1])
    return 0


@pytest.mark.parametrize(
    "value, message",
    [
        (2**63, "outside the int64 range"),
        (-(2**63) - 2**12, "outside the int64 range"),
        (2**64, "outside the int64 range"),
        (1e19, "outside the int64 range"),
        (-1e30, "outside the int64 range"),
    ],
)
def test_an_integer_out_of_range_is_a_400(serve, rows, value, message):
    server, *_ = serve()
    status, payload = call(server, f"/v1/models/{MODEL}:predict", {"instances": [{**rows[0], "day_of_week": value}]})
    assert status == 400 and payload["error"].startswith("feature 'day_of_week': ") and message in payload["error"]


def test_bounds_on_values_ids_names_and_versions(serve, rows):
    server, *_ = serve()
    status, payload = call(server, f"/v1/models/{MODEL}:predict", {"instances": [{**rows[0], "distance": 1e39}]})
    assert status == 400 and payload["error"] == "feature 'distance': 1e+39 is outside the float32 range"
    status, payload = call(server, f"/v1/models/{MODEL}:predict", {"instances": [{**rows[0], "carrier": "U" * 300}]})
    assert status == 400 and "a value of 300 characters (at most 256)" in payload["error"]
    tensors = [{"name": "carrier", "datatype": "BYTES", "data": ["UA"]}]
    status, payload = call(server, f"/v2/models/{MODEL}/infer", {"id": "x" * 300, "inputs": tensors})
    assert status == 400 and '"id" must be a string of at most 256' in payload["error"]
    status, payload = call(server, f"/v2/models/{MODEL}/infer", {"inputs": [{"name": ["carrier"], "data": ["UA"]}]})
    assert status == 400 and '"name" (a string)' in payload["error"]
    status, payload = call(server, f"/v1/models/{MODEL}/versions/{'9' * 5000}:predict", {"instances": rows[:1]})
    assert status == 404 and "no such endpoint" in payload["error"] and len(payload["error"]) < 300
    status, payload = call(
        server, f"/v1/models/{MODEL}:predict", {"instances": rows[:1]}, headers={"X-Request-Key": "k" * 300}
    )
    assert status == 400 and "request key of 300 characters" in payload["error"]


def test_every_method_and_malformed_request_gets_a_json_answer(serve):
    server, *_ = serve()
    for method in ("PUT", "DELETE", "PATCH", "OPTIONS"):
        status, payload, head = exchange(server, f"{method} /v1/models/{MODEL} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert status == 405 and b"Allow: GET, POST" in head and f"{method} is not allowed" in payload["error"]
    status, payload, _ = exchange(server, b"BREW /v1 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 501 and payload["error"]
    path = f"/v1/models/{MODEL}:predict"
    for length in ("\u00b2".encode(), b"-1", b"1e3", b""):
        status, payload, _ = exchange(
            server, b"POST " + path.encode() + b" HTTP/1.1\r\nContent-Length: " + length + b"\r\n\r\n{}"
        )
        assert status == 411 and "Content-Length" in payload["error"]
    status, payload, _ = exchange(
        server, f"POST {path} HTTP/1.1\r\nContent-Length: 100\r\n\r\n{{}}".encode(), half_close=True
    )
    assert status == 400 and payload["error"] == "the body ended after 2 of 100 bytes"


def test_a_client_expecting_100_continue_gets_it_before_it_sends_the_body(serve, rows):
    server, *_ = serve()
    body = json.dumps({"instances": rows[:1]}).encode()
    head = f"POST /v1/models/{MODEL}:predict HTTP/1.1\r\nContent-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n"
    with socket.create_connection(server.server_address[:2], timeout=5) as connection:
        connection.sendall(head.encode())
        assert connection.recv(1024) == b"HTTP/1.1 100 Continue\r\n\r\n"  # not held back with the answer
        connection.sendall(body)
        status, payload, _ = _response(connection)
    assert status == 200 and payload["predictions"]


def test_a_silent_connection_is_closed(serve):
    server, *_ = serve(ServingConfig(idle_seconds=0.3))
    with socket.create_connection(server.server_address[:2], timeout=5) as connection:
        started = time.monotonic()
        connection.sendall(f"POST /v1/models/{MODEL}:predict HTTP/1.1\r\nContent-Length: 50\r\n\r\n{{".encode())
        assert connection.recv(1024) == b"" and time.monotonic() - started < 3  # closed, no thread left waiting


def test_too_many_requests_or_connections_get_a_503_and_health_still_answers(serve, rows):
    server, service, *_ = serve(ServingConfig(max_concurrent_requests=1, queue_seconds=0.2, max_connections=2))
    path = f"/v1/models/{MODEL}:predict"
    with socket.create_connection(server.server_address[:2]) as slow:
        slow.sendall(f"POST {path} HTTP/1.1\r\nContent-Length: 100\r\n\r\n{{".encode())  # holds the only slot
        assert wait_for(lambda: server.slots._value == 0)  # taken (however loaded the machine)
        status, payload, head = exchange(server, f"POST {path} HTTP/1.1\r\nContent-Length: 2\r\n\r\n{{}}".encode())
        assert status == 503 and b"Retry-After: 1" in head and "too many requests" in payload["error"]
        assert wait_for(lambda: call(server, "/v2/health/ready")[0] == 200)  # once the refused one has closed
        # Only the slow connection open (the server closes a finished one a little after its client).
        assert wait_for(lambda: server._connections == 1)
        with socket.create_connection(server.server_address[:2]) as second:
            second.sendall(b"GET /v2/health/live HTTP/1.1\r\n\r\n")
            assert second.recv(1024).startswith(b"HTTP/1.1 200")
            assert server._connections == 2
            status, payload, _ = exchange(server, b"GET /v2/health/live HTTP/1.1\r\n\r\n")  # the third
            assert status == 503 and payload == {"error": "too many connections open"}
    assert wait_for(lambda: call(server, "/v2/health/live")[0] == 200)
    metrics = metrics_text(server)
    assert 'ct_requests_shed_total{model="flight-delay",reason="busy"} 1' in metrics
    assert re.search(r'ct_requests_shed_total\{model="flight-delay",reason="connections"\} [1-9]', metrics)


def test_a_full_worker_leaves_a_connection_to_another_with_room_and_takes_it_at_once_when_none_has(serve, monkeypatch):
    """A worker of two sharing a socket (serving/workers.py), its accepts called one at a time."""
    _, service, *_ = serve(ServingConfig(max_connections=1))
    mine, other = SharedConnections.for_workers(2)
    other.record(0)  # serving, with room
    listening = socket.create_server(("127.0.0.1", 0))
    worker = PredictionServer(None, service, listening=listening, peers=mine)
    waits = []
    monkeypatch.setattr(server_module, "time", SimpleNamespace(sleep=waits.append, monotonic=time.monotonic))
    clients = [socket.create_connection(listening.getsockname()) for _ in range(3)]
    try:
        accepted, _ = worker.get_request()
        worker.process_request(accepted, None)  # its one connection: the limit
        assert wait_for(lambda: mine.counts[0] == 1) and waits == []
        accepted, _ = worker.get_request()  # the other has room: left to it first
        assert waits == [HANDOFF_SECONDS]
        accepted.close()
        other.record(1)  # both full: taken at once, to be refused
        worker.get_request()[0].close()
        assert waits == [HANDOFF_SECONDS]
    finally:
        for client in clients:
            client.close()
        worker.server_close()
    assert wait_for(lambda: mine.counts[0] == 0)  # its connection closed, the count shared


def test_a_log_that_cannot_be_written_is_counted_shown_and_refuses_feedback(serve, rows, tmp_path):
    feedback_log = ParquetLog(tmp_path / "feedback_log", 1000, 10**9)
    server, service, *_ = serve(feedback_log=feedback_log)
    ids = call(server, f"/v1/models/{MODEL}:predict", {"instances": rows[:3]})[1]["request_ids"]
    feedback = [{"request_id": i, "label": 1} for i in ids]
    assert call(server, f"/v1/models/{MODEL}:feedback", {"feedback": feedback[:2]}, headers=FEEDBACK)[0] == 200
    shutil.rmtree(tmp_path / "feedback_log")
    (tmp_path / "feedback_log").write_text("a file where the log's folder was")  # writes fail even as root
    assert feedback_log.flush() is None
    status, health = call(server, "/v2/health/ready")
    assert status == 200 and "feedback_log" in health["failing"]["feedback log"]
    assert 'ct_log_write_failures_total{model="flight-delay",log="feedback"} 1' in metrics_text(server)
    status, payload = call(server, f"/v1/models/{MODEL}:feedback", {"feedback": feedback[2:]}, headers=FEEDBACK)
    assert status == 503 and "feedback cannot be kept now" in payload["error"]
    (tmp_path / "feedback_log").unlink()
    (tmp_path / "feedback_log").mkdir()
    feedback_log._retry_at = 0.0
    assert feedback_log.flush() is not None and read_log(tmp_path / "feedback_log").request_id.tolist() == ids[:2]
    assert call(server, "/v2/health/ready") == (200, {"ready": True})
