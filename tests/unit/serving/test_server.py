"""The prediction service over HTTP on loopback: both client APIs, bad requests, metrics, online performance."""

from __future__ import annotations

import pytest

from serving.config import ServingConfig
from serving.request_log import read_log
from tests.support.serving_helpers import MODEL, call, metrics_text, traffic_with_feedback


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
    got, payload = call(server, path, body, raw=raw)
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
