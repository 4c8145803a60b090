"""KServe rollouts (serving/canary/kserve.py, `ct rollout`, the controller's cluster canary)
through the real `kubernetes` client against tests/support/kube_api_stub.py: a local server with
only the API calls used (no cluster can run here). ML Metadata is a real SQLite store."""

from __future__ import annotations

import time

import numpy as np
import pytest
from kubernetes import client

from components.common import metadata
from components.common.datasets import load_dataset
from components.common.home import Home
from components.common.metadata import MetadataStore
from pipelines.cli import main
from serving.canary import kserve as rollout_module
from serving.canary.judge import SequentialTest
from serving.canary.kserve import STABLE_ANNOTATION, InferenceServiceRollout, KServeCanary, RolloutError
from serving.config import MODEL_VERSION_ENV, KServeRollout
from serving.request_log import ParquetLog, RequestLog
from tests.support.kube_api_stub import KubeApiStub, inference_service

KEY = ("ct", "ct-predictor")
MODEL = load_dataset("flights").model_name


@pytest.fixture
def api():
    stub = KubeApiStub(inference_service())
    yield stub
    stub.shutdown()
    stub.server_close()


def rollout_for(api: KubeApiStub) -> InferenceServiceRollout:
    api_client = client.ApiClient(client.Configuration(host=api.url))
    return InferenceServiceRollout(*KEY, api=client.CustomObjectsApi(api_client))


def served(api: KubeApiStub) -> dict:
    predictor = api.objects[KEY]["spec"]["predictor"]
    env = {e["name"]: e["value"] for e in predictor["containers"][0]["env"]}
    return {
        "version": env.get(MODEL_VERSION_ENV),
        "canary": predictor.get("canaryTrafficPercent"),
        "stable": api.objects[KEY]["metadata"]["annotations"].get(STABLE_ANNOTATION),
        "tz": env["TZ"],
    }


def test_first_version_takes_all_traffic_then_the_next_is_a_canary(api):
    rollout = rollout_for(api)
    first = rollout.deploy(1, canary_percent=10)
    assert (first.version, first.stable_version, first.canary) == (1, 1, False)
    assert served(api) == {"version": "1", "canary": None, "stable": "1", "tz": "UTC"}  # other env kept
    second = rollout.deploy(2, canary_percent=10)
    assert (second.version, second.stable_version, second.canary_percent) == (2, 1, 10)
    [_, patch] = api.patches()
    assert patch["metadata"] == {"resourceVersion": "2", "annotations": {STABLE_ANNOTATION: "1"}}
    assert patch["spec"]["predictor"]["canaryTrafficPercent"] == 10
    assert patch["spec"]["predictor"]["containers"][0]["env"] == [
        {"name": "TZ", "value": "UTC"},
        {"name": MODEL_VERSION_ENV, "value": "2"},
    ]
    assert {content_type for method, _, content_type, _ in api.requests if method == "PATCH"} == {
        "application/merge-patch+json"
    }


def test_promote_sends_all_traffic_to_the_canary_and_makes_it_stable(api):
    rollout = rollout_for(api)
    rollout.deploy(1, 10)
    rollout.deploy(2, 10)
    state = rollout.promote()
    assert (state.version, state.stable_version, state.canary) == (2, 2, False)
    assert api.patches()[-1]["spec"]["predictor"]["canaryTrafficPercent"] is None  # deletes the field
    assert served(api) == {"version": "2", "canary": None, "stable": "2", "tz": "UTC"}


def test_roll_back_returns_all_traffic_to_the_stable_version(api):
    rollout = rollout_for(api)
    rollout.deploy(1, 10)
    rollout.deploy(2, 10)
    rollout.deploy(3, 10)  # replaces the undecided canary 2; stable stays 1
    state = rollout.roll_back()
    assert (state.version, state.stable_version, state.canary) == (1, 1, False)
    assert served(api) == {"version": "1", "canary": None, "stable": "1", "tz": "UTC"}


@pytest.mark.parametrize("action", ["promote", "roll_back"])
def test_no_canary_means_nothing_to_decide_and_nothing_is_sent(api, action):
    rollout = rollout_for(api)
    rollout.deploy(1, 10)
    with pytest.raises(RolloutError, match="no canary in progress"):
        getattr(rollout, action)()
    assert len(api.patches()) == 1


def test_bad_requests_are_refused_before_any_call(api):
    rollout = rollout_for(api)
    with pytest.raises(RolloutError, match="between 1 and 99, got 100"):
        rollout.deploy(1, 100)
    rollout.deploy(1, 10)
    with pytest.raises(RolloutError, match="already serves version 1"):
        rollout.deploy(1, 10)
    assert len(api.patches()) == 1


@pytest.mark.parametrize(
    "status, hint",
    [
        (401, "not authenticated"),
        (403, "forbidden"),
        (404, "not found"),
        (409, "nothing was applied"),
        (500, "Internal Server Error"),
    ],
)
def test_api_errors_name_the_object_and_change_nothing(api, status, hint):
    rollout = rollout_for(api)
    rollout.deploy(1, 10)
    before = served(api)
    api.fail["PATCH"] = (status, 0.0)
    with pytest.raises(
        RolloutError, match=f"InferenceService ct/ct-predictor: patch failed with HTTP {status}.*{hint}"
    ):
        rollout.deploy(2, 10)
    assert served(api) == before


def test_a_concurrent_edit_is_a_conflict_not_a_lost_update(api):
    rollout = rollout_for(api)
    rollout.deploy(1, 10)
    original_get = rollout._get

    def get_then_someone_else_edits():
        seen = original_get()
        api.objects[KEY]["metadata"]["resourceVersion"] = "99"
        return seen

    rollout._get = get_then_someone_else_edits
    with pytest.raises(RolloutError, match="HTTP 409.*changed by someone else"):
        rollout.deploy(2, 10)
    assert served(api)["version"] == "1"


def test_a_missing_inference_service_says_so(api):
    api_client = client.ApiClient(client.Configuration(host=api.url))
    rollout = InferenceServiceRollout("ct", "nope", api=client.CustomObjectsApi(api_client))
    with pytest.raises(RolloutError, match="ct/nope: read failed with HTTP 404.*is KServe installed"):
        rollout.state()


def test_an_api_that_does_not_answer_times_out(api, monkeypatch):
    monkeypatch.setattr(rollout_module, "REQUEST_TIMEOUT_SECONDS", 0.5)
    rollout = rollout_for(api)
    api.fail["GET"] = (200, 3.0)
    started = time.monotonic()
    with pytest.raises(RolloutError, match="read failed: .*[Tt]imeout"):
        rollout.state()
    assert time.monotonic() - started < 2.5
    assert api.patches() == []


def test_an_unreachable_api_server_is_a_clear_error():
    api_client = client.ApiClient(client.Configuration(host="http://127.0.0.1:9"))
    api_client.rest_client.pool_manager.connection_pool_kw["retries"] = False
    rollout = InferenceServiceRollout(*KEY, api=client.CustomObjectsApi(api_client))
    with pytest.raises(RolloutError, match="ct/ct-predictor: read failed: .*refused"):
        rollout.state()


# --- the controller's canary on KServe, recorded in ML Metadata -------------------------


def pushed_run(store: MetadataStore, run_id: str, version: int) -> None:
    with store.step(run_id, "push", {}) as step:
        step.output(
            metadata.PUSHED_MODEL,
            f"/models/{MODEL}/{version}",
            model_name=MODEL,
            version=version,
            run_id=run_id,
            state="live",
        )
    store.update_run(run_id, decision=metadata.PUSHED, version=version)


def log_traffic(home: Home, version: int, good: bool, rows: int, seed: int) -> None:
    """What a revision's pods write on the shared volume: its predictions, and the labels that came back."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, rows)
    scores = np.clip(labels * 0.6 + rng.random(rows) * 0.4, 0, 1) if good else rng.random(rows)
    ids = [f"v{version}-{seed}-{i}" for i in range(rows)]
    requests, feedback = RequestLog(home.request_log, 1.0, 10**6, 10**9), ParquetLog(home.feedback_log, 10**6, 10**9)
    requests.append({"origin": ["EWR"] * rows}, list(scores), version, ids)
    requests.flush()
    feedback.add([{"request_id": i, "label": int(label)} for i, label in zip(ids, labels)])
    feedback.flush()


def deployed_canary(api, store, home, **settings) -> KServeCanary:
    canary = KServeCanary(
        rollout_for(api),
        store,
        MODEL,
        KServeRollout(bake_seconds=600, check_seconds=0, canary_test=SequentialTest(min_labelled=100), **settings),
        home,
    )
    pushed_run(store, "run-1", 1)
    assert canary.run_finished("run-1", now=0) == "version 1 deployed to all traffic (the first model)"
    pushed_run(store, "run-2", 2)
    assert canary.run_finished("run-2", now=100) == "version 2 deployed as a canary at 10%"
    return canary


@pytest.mark.parametrize("canary_good, decision", [(True, metadata.PROMOTED), (False, metadata.ROLLED_BACK)])
def test_controller_canary_is_judged_on_online_auc_from_the_shared_logs(api, store, tmp_path, canary_good, decision):
    home = Home(tmp_path / "home").create()
    canary = deployed_canary(api, store, home)
    log_traffic(home, 1, good=True, rows=300, seed=1)
    log_traffic(home, 2, good=canary_good, rows=60, seed=2)
    assert canary.tick(now=600) is None  # still baking
    assert canary.tick(now=800) is None  # too few labels for the canary (60 < 100): it waits
    log_traffic(home, 2, good=canary_good, rows=60, seed=3)
    said = canary.tick(now=900)
    assert said.startswith(f"canary 2 {decision}: online AUC")
    assert served(api)["version"] == ("2" if canary_good else "1") and served(api)["canary"] is None
    run = store.run("run-2")
    assert run.properties["canary"] == decision
    [step] = [s for s in run.steps if s.step == "canary"]
    assert step.parameters["canary_labelled"] == 120 and step.parameters["stable_labelled"] == 300
    assert store.rolled_back_versions(MODEL) == (set() if canary_good else {2})
    assert canary.tick(now=10_000) is None  # decided once


def test_controller_canary_rolls_back_a_revision_that_never_gets_ready(api, store, tmp_path):
    home = Home(tmp_path / "home").create()
    canary = deployed_canary(api, store, home)
    api.set_ready(*KEY, False)
    assert canary.tick(now=800) == "canary 2 rolled back: not Ready after 600 s"
    assert served(api)["version"] == "1" and store.rolled_back_versions(MODEL) == {2}


def test_controller_canary_ignores_runs_that_pushed_nothing_and_edits_by_others(api, store, tmp_path):
    canary = KServeCanary(
        rollout_for(api), store, MODEL, KServeRollout(bake_seconds=0, check_seconds=0), Home(tmp_path / "home").create()
    )
    store.update_run("run-0", decision=metadata.NOT_BLESSED)
    assert "pushed nothing" in canary.run_finished("run-0", now=0)
    assert api.patches() == []
    for run_id, version in (("run-1", 1), ("run-2", 2)):
        pushed_run(store, run_id, version)
        canary.run_finished(run_id, now=0)
    rollout_for(api).deploy(3, 50)  # someone deploys by hand meanwhile
    assert "changed by someone else" in canary.tick(now=1)
    assert served(api)["version"] == "3"


# --- ct rollout, with a kubeconfig pointing at the stub ---------------------------------


def test_ct_rollout_through_a_kubeconfig(api, store, tmp_path, monkeypatch, capsys):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(f"""apiVersion: v1
kind: Config
clusters: [{{name: stub, cluster: {{server: "{api.url}"}}}}]
users: [{{name: me, user: {{token: t0ken}}}}]
contexts: [{{name: stub, context: {{cluster: stub, user: me}}}}]
current-context: stub
""")
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    connection = f"sqlite:///{tmp_path / 'metadata.sqlite'}"
    pushed_run(store, "run-1", 1)
    pushed_run(store, "run-2", 2)
    assert main(["rollout", "deploy", "1"]) == 0
    assert main(["rollout", "deploy", "2", "--canary-percent", "25"]) == 0
    assert "version 2 (stable 1, canary at 25%, ready True)" in capsys.readouterr().out
    assert main(["rollout", "rollback", "--metadata", connection]) == 0
    assert served(api)["version"] == "1"
    assert MetadataStore(connection).rolled_back_versions(MODEL) == {2}
    assert main(["rollout", "promote"]) == 1
    assert "no canary in progress to promote" in capsys.readouterr().err
    assert main(["rollout", "deploy"]) == 1
    assert "a version is given with deploy" in capsys.readouterr().err
