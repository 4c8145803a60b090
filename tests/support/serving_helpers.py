"""Helpers for tests that talk to a real prediction server on loopback."""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request

import numpy as np

from components.common import model_repository
from serving.credentials import ServingToken

MODEL = "flight-delay"
TOKEN = ServingToken("serving-token-for-tests-0123456789")
FEEDBACK = {"Authorization": TOKEN.authorization}  # what a feedback caller holding the token sends


def publish(repository, model_dir, version, store=None):
    """Publishes the next model version, which must be `version`, through the repository's
    one publish (and, with a store, records its push as the pipeline's push step does)."""
    published = model_repository.publish(model_dir, repository, MODEL, {"run_id": f"run-{version}"})
    assert published.version == version, f"published version {published.version}, expected {version}"
    if store is not None:
        with store.step(f"run-{version}", "push", {}) as step:
            step.pushed_model(MODEL, version, str(published.path), published.digest)


def call(server, path, body=None, headers=None, raw=None):
    """One HTTP request; returns (status, decoded JSON body)."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(server.url + path, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def wait_for(condition, seconds=20.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def metrics_text(server):
    """The service's Prometheus metrics."""
    with urllib.request.urlopen(server.url + "/metrics") as response:
        return response.read().decode()


def canary_checks(metrics: str) -> int:
    """`ct_canary_checks_total` in a Prometheus text (`metrics_text`, `Metrics.render`)."""
    [checks] = re.findall(r"^ct_canary_checks_total\{[^}]*\} (\d+)$", metrics, re.MULTILINE)
    return int(checks)


def traffic_with_feedback(server, rows, canary_good: bool):
    """Sends each row once; answers with labels that make the canary look good or bad."""
    answers = []
    for index, row in enumerate(rows):
        status, payload = call(
            server, f"/v1/models/{MODEL}:predict", {"instances": [row]}, headers={"X-Request-Key": f"caller-{index}"}
        )
        assert status == 200
        answers.append((payload["request_ids"][0], payload["model_version"], payload["predictions"][0]))
    median = float(np.median([score for _, _, score in answers]))
    feedback = [
        {"request_id": rid, "label": int((score > median) == (version == "1" or canary_good))}
        for rid, version, score in answers
    ]
    status, result = call(
        server,
        f"/v1/models/{MODEL}:feedback",
        {"feedback": feedback + [{"request_id": "invented", "label": 1}]},
        headers=FEEDBACK,
    )
    assert status == 200
    assert {k: result[k] for k in ("accepted", "unknown", "rejected")} == {
        "accepted": len(feedback),
        "unknown": [],
        "rejected": ["invented"],
    }
    assert result.get("logged", len(feedback)) == len(feedback)  # with a feedback log, every label in it
