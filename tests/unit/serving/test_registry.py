"""Which versions serve: hot swap under load, sticky canary routing, pinned versions, failed loads, rollbacks."""

from __future__ import annotations

import json
import threading
import time

from components.common import metadata, model_repository
from components.common.model_repository import MANIFEST, content_digest
from serving.canary.judge import CanaryVerdict
from serving.canary.verdicts import VerdictBook
from serving.config import ServingConfig
from serving.request_log import ParquetLog, RequestLog
from serving.service import PredictionService
from tests.support.serving_helpers import MODEL, call, metrics_text, publish, wait_for


def test_hot_swap_under_load_fails_no_request(serve, rows, trained_model):
    server, service, repository, store = serve(ServingConfig(poll_seconds=0.05, canary_percent=50))
    failures, versions, stop = [], set(), threading.Event()

    def hammer(worker):
        index = 0
        while not stop.is_set():
            status, payload = call(
                server,
                f"/v1/models/{MODEL}:predict",
                {"instances": [rows[index % len(rows)]]},
                headers={"X-Request-Key": f"caller-{worker}-{index}"},
            )
            if status != 200:
                failures.append(payload)
            else:
                versions.add(payload["model_version"])
            index += 1

    workers = [threading.Thread(target=hammer, args=(w,)) for w in range(4)]
    for worker in workers:
        worker.start()
    time.sleep(0.3)
    publish(repository, trained_model, 2, store)
    assert wait_for(lambda: service.registry.routing.canary is not None)
    time.sleep(0.5)
    stop.set()
    for worker in workers:
        worker.join()
    assert failures == []
    assert versions == {"1", "2"}
    assert [s["label"] for s in call(server, f"/v1/models/{MODEL}")[1]["model_version_status"]] == ["stable", "canary"]


def test_canary_routing_is_sticky_per_request_key(serve, rows, trained_model):
    server, service, repository, store = serve(ServingConfig(poll_seconds=0.05, canary_percent=30))
    publish(repository, trained_model, 2, store)
    assert wait_for(lambda: service.registry.routing.canary is not None)
    answered = {
        key: {
            call(server, f"/v1/models/{MODEL}:predict", {"instances": rows[:1]}, headers={"X-Request-Key": key})[1][
                "model_version"
            ]
            for _ in range(3)
        }
        for key in (f"caller-{i}" for i in range(60))
    }
    assert all(len(v) == 1 for v in answered.values())
    share = sum(v == {"2"} for v in answered.values()) / len(answered)
    assert 0.1 < share < 0.5


def test_a_pinned_service_serves_its_version_only_and_never_a_canary(serve, rows, trained_model):
    # A KServe revision: KServe splits traffic between revisions, each pinned to one version.
    server, service, repository, store = serve(ServingConfig(poll_seconds=0.05, pinned_version=2))
    assert call(server, f"/v1/models/{MODEL}:predict", {"instances": rows[:1]})[0] == 503  # 2 not published yet
    publish(repository, trained_model, 2, store)
    publish(repository, trained_model, 3, store)
    assert wait_for(lambda: service.registry.routing.stable is not None)
    time.sleep(0.3)  # a few more polls: version 3 must not arrive
    routing = service.registry.routing
    assert routing.stable.version == 2 and routing.canary is None
    assert call(server, f"/v1/models/{MODEL}:predict", {"instances": rows[:1]})[1]["model_version"] == "2"


def record_push(store, folder, version, digest=None):
    """Records a push of `folder` with `digest` (default: of what it holds now), as the push step would."""
    with store.step(f"run-{version}", "push", {}) as step:
        step.pushed_model(MODEL, version, str(folder), digest or content_digest(folder))


def broken_version(repository, version):
    broken = repository / MODEL / str(version)
    broken.mkdir()
    (broken / "saved_model.pb").write_bytes(b"not a model")
    (broken / MANIFEST).write_text(json.dumps({"pushed_at": time.time()}))
    return broken


def test_a_version_that_fails_to_load_never_gets_traffic(serve, rows):
    server, service, repository, store = serve()
    record_push(store, broken_version(repository, 2), 2)
    assert wait_for(lambda: 2 in service.registry.failed)
    statuses = call(server, f"/v1/models/{MODEL}")[1]["model_version_status"]
    assert [(s["version"], s["state"]) for s in statuses] == [("1", "AVAILABLE"), ("2", "END")]
    assert statuses[1]["status"]["error_message"].startswith("failed to load")
    assert all(
        call(server, f"/v1/models/{MODEL}:predict", {"instances": rows[:1]}, headers={"X-Request-Key": str(i)})[1][
            "model_version"
        ]
        == "1"
        for i in range(20)
    )
    assert 'ct_model_load_failures_total{model="flight-delay"} 1' in metrics_text(server)


def test_only_versions_whose_push_was_recorded_with_their_content_are_served(serve, trained_model):
    server, service, repository, store = serve()
    # Published, its push not recorded: a run that crashed in between, or a folder dropped in.
    dropped = model_repository.publish(trained_model, repository, MODEL, {})
    time.sleep(0.3)
    assert service.registry.routing.canary is None and 2 not in service.registry.failed
    record_push(store, dropped.path, 2)  # recorded late: served from then on
    assert wait_for(lambda: service.registry.routing.canary is not None)
    # Changed on disk after it was published: its push records what was published; refused, and named.
    # (Altered before the push is recorded, so the service cannot load it in between.)
    altered = model_repository.publish(trained_model, repository, MODEL, {})
    (altered.path / "saved_model.pb").write_bytes((altered.path / "saved_model.pb").read_bytes() + b"\0")
    record_push(store, altered.path, 3, altered.digest)
    assert wait_for(lambda: 3 in service.registry.failed)
    assert "is not what was pushed" in service.registry.failed[3]
    assert service.registry.routing.canary.version == 2


def test_start_up_falls_back_to_the_last_version_that_loads(tmp_path, store, trained_model):
    repository = tmp_path / "models"
    publish(repository, trained_model, 1, store)
    record_push(store, broken_version(repository, 2), 2)
    VerdictBook(tmp_path / "verdicts", MODEL).write_once(2, CanaryVerdict(metadata.PROMOTED, "promoted earlier", {}))
    service = PredictionService(
        repository,
        MODEL,
        ServingConfig(),
        RequestLog(tmp_path / "log", 0, 1, 1),
        store,
        feedback_log=ParquetLog(tmp_path / "feedback", 1, 10**6),
        verdicts=tmp_path / "verdicts",
    )
    service.tick()
    assert service.registry.routing.stable.version == 1 and "failed to load" in service.registry.failed[2]
    assert service.ready()


def test_a_rolled_back_version_is_not_served_after_a_restart(serve, trained_model, tmp_path):
    server, service, repository, store = serve()
    publish(repository, trained_model, 2, store)
    assert wait_for(lambda: service.registry.routing.canary is not None)
    store.record_canary_decision(MODEL, 2, metadata.ROLLED_BACK, "test", {})
    again = PredictionService(repository, MODEL, ServingConfig(), RequestLog(tmp_path / "log2", 0, 1, 1), store)
    again.tick()
    assert [m.version for m in again.registry.routing.models] == [1]


def test_a_version_no_longer_held_has_its_session_closed(trained_model, tmp_path, monkeypatch):
    import pytest
    import tensorflow as tf

    from components.common import model_io
    from serving import registry

    made = []

    class Recorded(model_io.SavedModel):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(model_io, "SavedModel", Recorded)
    publish(tmp_path, trained_model, 1)
    model = registry.load_model(model_repository.version_path(tmp_path, MODEL, 1), 1)
    columns = registry._warmup_columns(model.signature)
    assert len(made[0].predict(columns)) == registry.WARMUP_ROWS
    del model  # replaced, and its last request answered: nothing holds it
    with pytest.raises(tf.errors.CancelledError, match="Session has been closed"):
        made[0].predict(columns)
