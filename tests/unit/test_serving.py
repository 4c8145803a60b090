"""The prediction service over real HTTP on loopback, serving real TensorFlow models."""

from __future__ import annotations

import re
import threading
import time
import urllib.request

import numpy as np
import pytest

from components.common import metadata
from components.infra_validate.logic import instances
from components.push.logic import MANIFEST
from pipelines.config import ServingConfig
from serving.request_log import ParquetLog, RequestLog, read_log
from serving.service import PredictionService
from tests.serving_helpers import MODEL, call, publish, wait_for

def test_tf_serving_rest_api(serve, rows):
    server, *_ = serve()
    assert call(server, f"/v1/models/{MODEL}") == (200, {"model_version_status": [
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}, "label": "stable"}]})
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


@pytest.mark.parametrize("path, body, raw, status, message", [
    ("/v1/models/flight-delay:predict", None, b"{not json", 400, "malformed JSON"),
    ("/v1/models/flight-delay:predict", {"rows": []}, None, 400, 'either "instances" or "inputs"'),
    ("/v1/models/flight-delay:predict", {"instances": [{"carrier": "UA"}]}, None, 400, "feature 'day_of_week': missing"),
    ("/v1/models/flight-delay:predict", {"instances": "UA"}, None, 400, '"instances" must be a list of objects'),
    ("/v1/models/flight-delay:predict", {"instances": []}, None, 400, "no instances"),
    ("/v1/models/other:predict", {"instances": [{}]}, None, 404, "model 'other' is not served here"),
    ("/v1/models/flight-delay/versions/7:predict", {"instances": [{}]}, None, 404, "version 7 is not being served"),
    ("/v1/models/flight-delay/labels/beta:predict", {"instances": [{}]}, None, 400, "unknown label 'beta'"),
    ("/v1/models/flight-delay/labels/canary:predict", {"instances": [{}]}, None, 404, "has no canary version now"),
    ("/v1/models/flight-delay:feedback", {"feedback": [{"request_id": "x", "label": 2}]}, None, 400, "feedback 0: expected"),
    ("/v2/models/flight-delay/infer", {"inputs": []}, None, 400, 'non-empty "inputs" list'),
    ("/v1/models/flight-delay:explain", {"instances": [{}]}, None, 404, "no such endpoint"),
])
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


def test_hot_swap_under_load_fails_no_request(serve, rows, trained_model):
    server, service, repository, _ = serve(ServingConfig(poll_seconds=0.05, canary_percent=50))
    failures, versions, stop = [], set(), threading.Event()

    def hammer(worker):
        index = 0
        while not stop.is_set():
            status, payload = call(server, f"/v1/models/{MODEL}:predict", {"instances": [rows[index % len(rows)]]},
                                   headers={"X-Request-Key": f"caller-{worker}-{index}"})
            if status != 200:
                failures.append(payload)
            else:
                versions.add(payload["model_version"])
            index += 1

    workers = [threading.Thread(target=hammer, args=(w,)) for w in range(4)]
    for worker in workers:
        worker.start()
    time.sleep(0.3)
    publish(repository, trained_model, 2)
    assert wait_for(lambda: service.registry.routing.canary is not None)
    time.sleep(0.5)
    stop.set()
    for worker in workers:
        worker.join()
    assert failures == []
    assert versions == {"1", "2"}
    assert [s["label"] for s in call(server, f"/v1/models/{MODEL}")[1]["model_version_status"]] == ["stable", "canary"]


def test_canary_routing_is_sticky_per_request_key(serve, rows, trained_model):
    server, service, repository, _ = serve(ServingConfig(poll_seconds=0.05, canary_percent=30))
    publish(repository, trained_model, 2)
    assert wait_for(lambda: service.registry.routing.canary is not None)
    answered = {key: {call(server, f"/v1/models/{MODEL}:predict", {"instances": rows[:1]},
                           headers={"X-Request-Key": key})[1]["model_version"] for _ in range(3)}
                for key in (f"caller-{i}" for i in range(60))}
    assert all(len(v) == 1 for v in answered.values())
    share = sum(v == {"2"} for v in answered.values()) / len(answered)
    assert 0.1 < share < 0.5


def test_a_pinned_service_serves_its_version_only_and_never_a_canary(serve, rows, trained_model):
    # A KServe revision: KServe splits traffic between revisions, each pinned to one version.
    server, service, repository, _ = serve(ServingConfig(poll_seconds=0.05, pinned_version=2))
    assert call(server, f"/v1/models/{MODEL}:predict", {"instances": rows[:1]})[0] == 503  # 2 not published yet
    publish(repository, trained_model, 2)
    publish(repository, trained_model, 3)
    assert wait_for(lambda: service.registry.routing.stable is not None)
    time.sleep(0.3)  # a few more polls: version 3 must not arrive
    routing = service.registry.routing
    assert routing.stable.version == 2 and routing.canary is None
    assert call(server, f"/v1/models/{MODEL}:predict", {"instances": rows[:1]})[1]["model_version"] == "2"


def test_a_version_that_fails_to_load_never_gets_traffic(serve, rows):
    server, service, repository, _ = serve()
    broken = repository / MODEL / "2"
    broken.mkdir()
    (broken / "saved_model.pb").write_bytes(b"not a model")
    (broken / MANIFEST).write_text("{}")
    assert wait_for(lambda: 2 in service.registry.failed)
    statuses = call(server, f"/v1/models/{MODEL}")[1]["model_version_status"]
    assert [(s["version"], s["state"]) for s in statuses] == [("1", "AVAILABLE"), ("2", "END")]
    assert statuses[1]["status"]["error_message"]
    assert all(call(server, f"/v1/models/{MODEL}:predict", {"instances": rows[:1]},
                    headers={"X-Request-Key": str(i)})[1]["model_version"] == "1" for i in range(20))
    assert 'ct_model_load_failures_total{model="flight-delay"} 1' in _metrics(server)


def _metrics(server):
    with urllib.request.urlopen(server.url + "/metrics") as response:
        return response.read().decode()


def _traffic_with_feedback(server, rows, canary_good: bool):
    """Sends each row once; answers with labels that make the canary look good or bad."""
    answers = []
    for index, row in enumerate(rows):
        status, payload = call(server, f"/v1/models/{MODEL}:predict", {"instances": [row]},
                               headers={"X-Request-Key": f"caller-{index}"})
        assert status == 200
        answers.append((payload["request_ids"][0], payload["model_version"], payload["predictions"][0]))
    median = float(np.median([score for _, _, score in answers]))
    feedback = [{"request_id": rid, "label": int((score > median) == (version == "1" or canary_good))}
                for rid, version, score in answers]
    status, result = call(server, f"/v1/models/{MODEL}:feedback", {"feedback": feedback + [{"request_id": "gone", "label": 1}]})
    assert status == 200 and result == {"accepted": len(feedback), "unknown": ["gone"]}


@pytest.mark.parametrize("canary_good, decision", [(True, metadata.PROMOTED), (False, metadata.ROLLED_BACK)])
def test_canary_is_promoted_or_rolled_back_from_feedback_and_recorded(serve, rows, trained_model, canary_good, decision):
    config = ServingConfig(poll_seconds=0.05, canary_percent=50, canary_min_labelled=40)
    server, service, repository, store = serve(config)
    publish(repository, trained_model, 2, store)
    assert wait_for(lambda: service.registry.routing.canary is not None)
    _traffic_with_feedback(server, rows[:300], canary_good)
    assert wait_for(lambda: service.decisions)
    assert service.registry.routing.canary is None
    [made] = service.decisions
    assert (made["version"], made["decision"]) == (2, decision)
    assert made["numbers"]["canary_labelled"] >= 40 and made["numbers"]["stable_labelled"] >= 40
    assert service.registry.routing.stable.version == (2 if canary_good else 1)
    run = store.run("run-2")
    assert run.properties["canary"] == decision and [s.step for s in run.steps] == ["push", "canary"]
    assert run.steps[1].parameters["canary_auc"] == pytest.approx(made["numbers"]["canary_auc"])
    assert store.rolled_back_versions(MODEL) == (set() if canary_good else {2})
    assert store.production_model(MODEL).properties["version"] == (2 if canary_good else 1)
    assert f'ct_canary_decisions_total{{model="flight-delay",decision="{decision}"}} 1' in _metrics(server)


def test_a_rolled_back_version_is_not_served_after_a_restart(serve, trained_model, tmp_path):
    server, service, repository, store = serve()
    publish(repository, trained_model, 2, store)
    assert wait_for(lambda: service.registry.routing.canary is not None)
    store.record_canary_decision(MODEL, 2, metadata.ROLLED_BACK, "test", {})
    again = PredictionService(repository, MODEL, ServingConfig(), RequestLog(tmp_path / "log2", 0, 1, 1), store)
    again.tick()
    assert [m.version for m in again.registry.routing.models] == [1]


def test_request_log_and_metrics(serve, rows, tmp_path):
    server, service, *_ = serve(ServingConfig(poll_seconds=0.05, request_log_rotate_rows=50))
    for row in rows[:120]:
        call(server, f"/v1/models/{MODEL}:predict", {"instances": [row]})
    service.request_log.flush()
    logged = read_log(tmp_path / "request_log")
    assert len(logged) == 120
    assert {"carrier", "temp", "prediction", "model_version", "request_id", "logged_at"} <= set(logged.columns)
    assert len(service.request_log.files()) == 3  # 50 + 50 + the flushed 20
    metrics = _metrics(server)
    assert 'ct_requests_total{model="flight-delay",version="1",api="tfserving"} 120' in metrics
    assert 'ct_request_latency_ms_count{model="flight-delay",version="1"} 120' in metrics


def test_request_log_stays_under_its_size_bound(tmp_path):
    log = RequestLog(tmp_path, sample=1.0, rotate_rows=10, max_bytes=20_000)
    for i in range(400):
        log.append([{"x": float(i), "name": "row" * 20}], [0.5], 1, [f"id-{i}"])
    files = log.files()
    assert sum(f.stat().st_size for f in files) <= 20_000 and len(files) < 40
    assert read_log(tmp_path).request_id.iloc[-1] == "id-399"


def test_performance_reports_online_metrics(serve, rows):
    server, service, *_ = serve()
    _traffic_with_feedback(server, rows[:100], canary_good=True)
    status, performance = call(server, f"/v1/models/{MODEL}/performance")
    assert status == 200 and performance["stable"]["labelled"] == 100 and performance["stable"]["auc"] == 1.0


# --- flight facts in, features from the feature store -----------------------------------

FACTS = ["carrier", "origin", "dest", "distance", "sched_dep_hour", "day_of_week", "month", "sched_dep", "tailnum"]


@pytest.fixture
def facts_and_examples(flight_months, flights, feature_sources):
    """January flights as a client sends them (facts and entities) and as training saw them."""
    from components.ingest.logic import examples_with_features

    january = flight_months["2013-01"].head(40)
    examples, _ = examples_with_features(january, flights, feature_sources, "january")
    return instances(january, FACTS), instances(examples, flights.features)


def test_a_client_sends_flight_facts_and_gets_the_prediction_of_the_full_row(serve, feature_repo, facts_and_examples):
    server, service, _, _ = serve(feature_repo=feature_repo)
    facts, full_rows = facts_and_examples
    path = f"/v1/models/{MODEL}:predict"
    status, from_facts = call(server, path, {"instances": facts})
    assert status == 200, from_facts
    expected = call(server, path, {"instances": full_rows})[1]["predictions"]
    np.testing.assert_allclose(from_facts["predictions"], expected, rtol=1e-6)  # no training/serving skew
    columns = {name: [row[name] for row in facts] for name in FACTS}
    np.testing.assert_allclose(call(server, path, {"inputs": columns})[1]["outputs"], expected, rtol=1e-6)
    datatypes = {str: "BYTES", int: "INT64", float: "FP32"}
    v2 = {"inputs": [{"name": name, "shape": [len(values)], "datatype": datatypes[type(values[0])], "data": values}
                     for name, values in columns.items()]}
    status, answer = call(server, f"/v2/models/{MODEL}/infer", v2)
    assert status == 200, answer
    np.testing.assert_allclose(answer["outputs"][0]["data"], expected, rtol=1e-6)


def test_unknown_entities_get_defaults_and_are_counted_in_metrics(serve, feature_repo, facts_and_examples):
    server, service, _, _ = serve(feature_repo=feature_repo)
    facts, _ = facts_and_examples
    unknown = {**facts[0], "tailnum": "N0NE", "origin": "XXX"}
    assert call(server, f"/v1/models/{MODEL}:predict", {"instances": [unknown]})[0] == 200
    with urllib.request.urlopen(server.url + "/metrics") as response:
        metrics = response.read().decode()
    assert f'ct_feature_missing_total{{model="{MODEL}",view="planes"}} 1' in metrics
    assert f'ct_feature_missing_total{{model="{MODEL}",view="weather"}} 1' in metrics


@pytest.mark.parametrize("change, message", [
    ({"tailnum": None}, "instance 0: entity 'tailnum' is missing"),
    ({"temp": 3.0}, "instance 0: feature 'temp' comes from the feature store"),
    ({"sched_dep": "2013-01-05 10:15"}, "feature 'sched_dep': .*ISO-8601.*value '2013-01-05 10:15'"),
])
def test_bad_entity_requests_are_refused_with_400(serve, feature_repo, facts_and_examples, change, message):
    server, _, _, _ = serve(feature_repo=feature_repo)
    row = {k: v for k, v in {**facts_and_examples[0][0], **change}.items() if v is not None}
    status, answer = call(server, f"/v1/models/{MODEL}:predict", {"instances": [row]})
    assert status == 400 and re.search(message, answer["error"]), answer


def test_feedback_is_logged_for_judges_outside_the_service(serve, rows, tmp_path):
    # On KServe the feedback may reach another revision's pod: the shared log keeps it anyway.
    server, service, _, _ = serve(feedback_log=ParquetLog(tmp_path / "feedback_log", 1000, 10**9))
    answer = call(server, f"/v1/models/{MODEL}:predict", {"instances": rows[:3]})[1]
    items = [{"request_id": rid, "label": 1} for rid in answer["request_ids"]] + [{"request_id": "elsewhere", "label": 0}]
    status, body = call(server, f"/v1/models/{MODEL}:feedback", {"feedback": items})
    assert status == 200 and body == {"accepted": 3, "unknown": ["elsewhere"], "logged": 4}
    service.stop()  # flushes
    logged = read_log(tmp_path / "feedback_log")
    assert logged.request_id.tolist() == [*answer["request_ids"], "elsewhere"] and logged.label.tolist() == [1, 1, 1, 0]


def test_entity_columns_of_different_lengths_are_refused(serve, feature_repo, facts_and_examples):
    server, _, _, _ = serve(feature_repo=feature_repo)
    columns = {name: [row[name] for row in facts_and_examples[0][:3]] for name in FACTS}
    columns["tailnum"] = columns["tailnum"][:2]
    status, answer = call(server, f"/v1/models/{MODEL}:predict", {"inputs": columns})
    assert status == 400 and "expected lists of the same length" in answer["error"]
