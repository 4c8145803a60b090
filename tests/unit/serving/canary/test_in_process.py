"""The service's own canary: promoted or rolled back from feedback, and recorded in ML Metadata."""

from __future__ import annotations

import pytest

from components.common import metadata
from serving.config import ServingConfig
from tests.support.serving_helpers import MODEL, metrics_text, publish, traffic_with_feedback, wait_for


@pytest.mark.parametrize("canary_good, decision", [(True, metadata.PROMOTED), (False, metadata.ROLLED_BACK)])
def test_canary_is_promoted_or_rolled_back_from_feedback_and_recorded(
    serve, rows, trained_model, canary_good, decision
):
    config = ServingConfig(poll_seconds=0.05, canary_percent=50, canary_min_labelled=40)
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
