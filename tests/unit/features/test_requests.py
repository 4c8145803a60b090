"""A client sends flight facts and entities; the service looks up the features online."""

from __future__ import annotations

import re
import urllib.request

import numpy as np
import pytest

from components.common.model_io import frame_to_instances
from tests.support.serving_helpers import MODEL, call

FACTS = ["carrier", "origin", "dest", "distance", "sched_dep_hour", "day_of_week", "month", "sched_dep", "tailnum"]


@pytest.fixture
def facts_and_examples(flight_months, flights, feature_sources):
    """January flights as a client sends them (facts and entities) and as training saw them."""
    from components.ingest.logic import examples_with_features

    january = flight_months["2013-01"].head(40)
    examples, _ = examples_with_features(january, flights, feature_sources, "january")
    return frame_to_instances(january, FACTS), frame_to_instances(examples, flights.features)


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
    v2 = {
        "inputs": [
            {"name": name, "shape": [len(values)], "datatype": datatypes[type(values[0])], "data": values}
            for name, values in columns.items()
        ]
    }
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


@pytest.mark.parametrize(
    "change, message",
    [
        ({"tailnum": None}, "instance 0: entity 'tailnum' is missing"),
        ({"temp": 3.0}, "instance 0: feature 'temp' comes from the feature store"),
        ({"sched_dep": "2013-01-05 10:15"}, "feature 'sched_dep': .*ISO-8601.*value '2013-01-05 10:15'"),
    ],
)
def test_bad_entity_requests_are_refused_with_400(serve, feature_repo, facts_and_examples, change, message):
    server, _, _, _ = serve(feature_repo=feature_repo)
    row = {k: v for k, v in {**facts_and_examples[0][0], **change}.items() if v is not None}
    status, answer = call(server, f"/v1/models/{MODEL}:predict", {"instances": [row]})
    assert status == 400 and re.search(message, answer["error"]), answer


def test_entity_columns_of_different_lengths_are_refused(serve, feature_repo, facts_and_examples):
    server, _, _, _ = serve(feature_repo=feature_repo)
    columns = {name: [row[name] for row in facts_and_examples[0][:3]] for name in FACTS}
    columns["tailnum"] = columns["tailnum"][:2]
    status, answer = call(server, f"/v1/models/{MODEL}:predict", {"inputs": columns})
    assert status == 400 and "expected lists of the same length" in answer["error"]
