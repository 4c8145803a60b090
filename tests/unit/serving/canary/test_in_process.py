"""The service's own canary: promoted or rolled back from feedback, and recorded in ML Metadata."""

from __future__ import annotations

import numpy as np
import pytest

from components.common import metadata
from serving.canary.judge import CanaryVerdict, SequentialTest
from serving.canary.verdicts import VerdictBook
from serving.config import ServingConfig
from serving.request_log import ParquetLog, RequestLog
from serving.service import PredictionService
from tests.support.serving_helpers import (
    FEEDBACK,
    MODEL,
    TOKEN,
    canary_checks,
    metrics_text,
    publish,
    traffic_with_feedback,
    wait_for,
)


@pytest.mark.parametrize("canary_good, decision", [(True, metadata.PROMOTED), (False, metadata.ROLLED_BACK)])
def test_canary_is_promoted_or_rolled_back_from_feedback_and_recorded(
    serve, rows, trained_model, canary_good, decision
):
    config = ServingConfig(
        poll_seconds=0.05, canary_percent=50, canary_test=SequentialTest(min_labelled=40), canary_check_seconds=0.1
    )
    server, service, repository, store = serve(config)
    publish(repository, trained_model, 2, store)
    assert wait_for(lambda: service.registry.routing.canary is not None)
    traffic_with_feedback(server, rows[:300], canary_good)
    assert wait_for(lambda: service.canary.decisions)
    assert service.registry.routing.canary is None
    [made] = service.canary.decisions
    assert (made["version"], made["decision"]) == (2, decision)
    assert made["numbers"]["canary_labelled"] >= 40 and made["numbers"]["stable_labelled"] >= 40
    assert service.registry.routing.stable.version == (2 if canary_good else 1)
    run = store.run("run-2")
    assert run.properties["canary"] == decision and [s.step for s in run.steps] == ["push", "canary"]
    assert run.steps[1].parameters["canary_auc"] == pytest.approx(made["numbers"]["canary_auc"])
    assert store.rolled_back_versions(MODEL) == (set() if canary_good else {2})
    assert store.production_model(MODEL).properties["version"] == (2 if canary_good else 1)
    assert f'ct_canary_decisions_total{{model="flight-delay",decision="{decision}"}} 1' in metrics_text(server)


SHARED = ServingConfig(canary_percent=50, canary_test=SequentialTest(min_labelled=40), canary_check_seconds=0)


def replica(tmp_path, store, config=SHARED, request_log_sample=1.0):
    """One serving replica of several sharing a home: the model repository, the request and
    feedback logs, the verdicts (as the production Deployment's two replicas share the volume)."""
    service = PredictionService(
        tmp_path / "models",
        MODEL,
        config,
        RequestLog(tmp_path / "request_log", request_log_sample, 100_000, 10**9),
        store,
        feedback_log=ParquetLog(tmp_path / "feedback_log", 100_000, 10**9),
        verdicts=tmp_path / "canary_verdicts",
        token=TOKEN,
    )
    service.tick()
    return service


@pytest.mark.parametrize("canary_good, decision", [(True, metadata.PROMOTED), (False, metadata.ROLLED_BACK)])
def test_replicas_sharing_a_home_reach_one_verdict_from_all_their_logs(
    tmp_path, store, rows, trained_model, canary_good, decision, monkeypatch
):
    publish(tmp_path / "models", trained_model, 1, store)
    first, second = replica(tmp_path, store), replica(tmp_path, store)
    publish(tmp_path / "models", trained_model, 2, store)
    for service in (first, second):
        service.tick()
        assert service.registry.routing.canary.version == 2
        assert canary_checks(service.metrics.render()) == 1  # weighed at once, nothing to decide on yet
    answers = []
    for index, row in enumerate(rows[:300]):  # the load balancer spreads the traffic
        answer = (first, second)[index % 2].predict(MODEL, {"instances": [row]}, request_key=f"caller-{index}")
        answers.append((answer["request_ids"][0], answer["model_version"], answer["predictions"][0]))
    median = float(np.median([score for _, _, score in answers]))
    labels = [
        {"request_id": rid, "label": int((score > median) == (version == "1" or canary_good))}
        for rid, version, score in answers
    ]
    # All feedback reaches one replica, half of it for predictions the other one made.
    assert second.feedback(MODEL, {"feedback": labels}, FEEDBACK["Authorization"])["logged"] == 300
    for service in (first, second):  # each writes its logs (every few seconds when serving)
        service.request_log.flush()
        service.feedback_log.flush()
    # What a client waiting for the next look (the demo) would see once the look is counted.
    seen_when_counted = []
    count = first.metrics.canary_checked

    def counted():
        seen_when_counted.append((first.registry.routing.canary, store.run("run-2").properties.get("canary")))
        count()

    monkeypatch.setattr(first.metrics, "canary_checked", counted)
    for service in (first, second):  # the first to judge decides; the other follows
        service.tick()
    assert seen_when_counted == [(None, decision)]  # the verdict routed and recorded before the look counts
    for service in (first, second):
        assert service.registry.routing.canary is None
        assert service.registry.routing.stable.version == (2 if canary_good else 1)
        [made] = service.canary.decisions
        assert (made["version"], made["decision"]) == (2, decision)
        assert made["numbers"]["canary_labelled"] >= 40 and made["numbers"]["stable_labelled"] >= 40
    # The first weighed the evidence again and decided; the second followed its verdict unweighed.
    assert (canary_checks(first.metrics.render()), canary_checks(second.metrics.render())) == (2, 1)
    run = store.run("run-2")
    assert [s.step for s in run.steps] == ["push", "canary"]  # recorded once, by the replica that judged
    assert run.properties["canary"] == decision


def test_replicas_sharing_a_home_report_online_performance_from_all_their_logs(tmp_path, store, rows, trained_model):
    publish(tmp_path / "models", trained_model, 1, store)
    first, second = replica(tmp_path, store), replica(tmp_path, store)
    answers = [  # the load balancer spreads the traffic
        (first, second)[index % 2].predict(MODEL, {"instances": [row]}) for index, row in enumerate(rows[:300])
    ]
    scores = np.array([answer["predictions"][0] for answer in answers])
    # The newest 100 labels rank the scores perfectly, the 200 before them exactly wrongly.
    newest = scores[200:] > np.median(scores[200:])
    labels = np.concatenate([scores[:200] <= np.median(scores[:200]), newest]).astype(int)
    feedback = [{"request_id": a["request_ids"][0], "label": int(y)} for a, y in zip(answers, labels)]
    # All feedback reaches one replica, half of it for predictions the other one made.
    assert second.feedback(MODEL, {"feedback": feedback}, FEEDBACK["Authorization"])["logged"] == 300
    for service in (first, second):
        service.request_log.flush()
        service.feedback_log.flush()
    for service in (first, second):  # either answers for both
        recent = service.performance(MODEL, 100)["stable"]
        assert (recent["labelled"], recent["auc"]) == (100, 1.0)
        everything = service.performance(MODEL, 1000)["stable"]
        assert everything["labelled"] == 300 and everything["auc"] < 0.5
        assert everything["requests"] == 150  # requests and errors are each replica's own


def test_a_replica_whose_request_log_keeps_no_predictions_reports_the_labels_it_holds(
    tmp_path, store, rows, trained_model
):
    publish(tmp_path / "models", trained_model, 1, store)
    alone = replica(tmp_path, store, request_log_sample=0.0)
    answers = [alone.predict(MODEL, {"instances": [row]}) for row in rows[:50]]
    feedback = [{"request_id": a["request_ids"][0], "label": index % 2} for index, a in enumerate(answers)]
    assert alone.feedback(MODEL, {"feedback": feedback}, FEEDBACK["Authorization"])["logged"] == 50
    alone.feedback_log.flush()
    assert alone.performance(MODEL, 1000)["stable"]["labelled"] == 50  # its journal's, not the empty log's


def test_a_restarted_replica_keeps_an_undecided_canary_and_follows_a_verdict(tmp_path, store, trained_model):
    publish(tmp_path / "models", trained_model, 1, store)
    publish(tmp_path / "models", trained_model, 2, store)
    restarted = replica(tmp_path, store)
    routing = restarted.registry.routing
    assert (routing.stable.version, routing.canary.version, routing.canary_percent) == (1, 2, 50)
    VerdictBook(tmp_path / "canary_verdicts", MODEL).write_once(
        2, CanaryVerdict(metadata.PROMOTED, "decided by another replica", {})
    )
    restarted.tick()
    assert (restarted.registry.routing.stable.version, restarted.registry.routing.canary) == (2, None)
    assert replica(tmp_path, store).registry.routing.stable.version == 2  # and after the next restart


def test_a_verdict_is_written_once(tmp_path):
    book = VerdictBook(tmp_path, MODEL)
    assert book.read(3) is None and not book.promoted(3)
    assert book.write_once(3, CanaryVerdict(metadata.ROLLED_BACK, "first", {}))
    assert not book.write_once(3, CanaryVerdict(metadata.PROMOTED, "second", {}))
    assert book.read(3)["reason"] == "first" and not book.promoted(3)
    assert sorted(p.name for p in (tmp_path / MODEL).iterdir()) == ["3.json"]  # nothing partial left
