"""KServe rollouts (serving/canary/kserve.py, `ct rollout`, the controller's cluster canary)
through the real `kubernetes` client against a real Kubernetes API server on loopback
(tests/support/kube.py), with the production-kserve overlay applied and KServe's
InferenceService kind installed. The rollout acts as the overlay's `ct-controller` service
account, with a token the API server issued, under the overlay's Role. No KServe controller
runs: the tests report the InferenceService's readiness as KServe's would. ML Metadata is a
real SQLite store."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from dataclasses import dataclass

import numpy as np
import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from components.common import metadata
from components.common.datasets import load_dataset
from components.common.home import Home
from components.common.metadata import MetadataStore
from pipelines.cli import main
from serving.canary import kserve as rollout_module
from serving.canary.judge import SequentialTest
from serving.canary.kserve import (
    API_VERSION,
    GROUP,
    PLURAL,
    STABLE_ANNOTATION,
    InferenceServiceRollout,
    KServeCanary,
    RolloutError,
)
from serving.config import MODEL_VERSION_ENV, KServeRollout
from serving.request_log import ParquetLog, RequestLog
from tests.support.kube import KubeApiServer
from tests.support.manifests import build

NAMESPACE, NAME = "ct", "ct-predictor"
KEPT_ENV = "CT_SERVING_TOKEN"  # the manifests' own entry, which every patch must keep
MODEL = load_dataset("flights").model_name


@pytest.fixture(scope="module")
def overlay(kube) -> dict:
    """The production-kserve overlay applied to the cluster; its InferenceService as rendered."""
    rendered = build("production-kserve")
    applied = kube.apply(rendered)
    assert applied.returncode == 0, applied.stderr
    return next(doc for doc in rendered if doc["kind"] == "InferenceService")


@dataclass
class Cluster:
    kube: KubeApiServer
    admin: client.CustomObjectsApi

    def read(self, name: str = NAME) -> dict:
        return self.admin.get_namespaced_custom_object(GROUP, API_VERSION, NAMESPACE, PLURAL, name)

    def edit(self, patch: dict) -> None:
        """Someone else's change, as the administrator."""
        self.admin.patch_namespaced_custom_object(GROUP, API_VERSION, NAMESPACE, PLURAL, NAME, patch)

    def set_ready(self, ready: bool) -> None:
        """KServe's controller reporting the latest revision's readiness, through the status subresource."""
        status = {"status": {"conditions": [{"type": "Ready", "status": str(ready)}]}}
        self.admin.patch_namespaced_custom_object_status(GROUP, API_VERSION, NAMESPACE, PLURAL, NAME, status)

    def delete(self) -> None:
        self.admin.delete_namespaced_custom_object(GROUP, API_VERSION, NAMESPACE, PLURAL, NAME)

    def token(self, service_account: str = "ct-controller") -> str:
        return self.kube.service_account_token(NAMESPACE, service_account)


@pytest.fixture
def api(kube, overlay) -> Cluster:
    """The overlay's InferenceService, created anew (unpinned) and reported Ready."""
    cluster = Cluster(kube, client.CustomObjectsApi(kube.api_client()))
    with contextlib.suppress(ApiException):
        cluster.delete()
    cluster.admin.create_namespaced_custom_object(GROUP, API_VERSION, NAMESPACE, PLURAL, overlay)
    cluster.set_ready(True)
    return cluster


def rollout_for(api: Cluster, token: str | None = None) -> InferenceServiceRollout:
    """The rollout as the controller's pod makes it: its service account's token."""
    api_client = api.kube.api_client(token or api.token())
    return InferenceServiceRollout(NAMESPACE, NAME, api=client.CustomObjectsApi(api_client))


def served(api: Cluster) -> dict:
    isvc = api.read()
    predictor = isvc["spec"]["predictor"]
    env = {e["name"]: e.get("value") for e in predictor["containers"][0]["env"]}
    return {
        "version": env.get(MODEL_VERSION_ENV),
        "canary": predictor.get("canaryTrafficPercent"),
        "stable": (isvc["metadata"].get("annotations") or {}).get(STABLE_ANNOTATION),
        "kept": KEPT_ENV in env,
    }


def generation(api: Cluster) -> int:
    """How many times the spec was written, as the API server counts it (1 on creation)."""
    return api.read()["metadata"]["generation"]


def test_first_version_takes_all_traffic_then_the_next_is_a_canary(api):
    rollout = rollout_for(api)
    first = rollout.deploy(1, canary_percent=10)
    assert (first.version, first.stable_version, first.canary) == (1, 1, False)
    assert served(api) == {"version": "1", "canary": None, "stable": "1", "kept": True}  # other env kept
    second = rollout.deploy(2, canary_percent=10)
    assert (second.version, second.stable_version, second.canary_percent) == (2, 1, 10)
    assert served(api) == {"version": "2", "canary": 10, "stable": "1", "kept": True}
    assert [e["name"] for e in api.read()["spec"]["predictor"]["containers"][0]["env"]] == [KEPT_ENV, MODEL_VERSION_ENV]
    assert generation(api) == 3  # one write of the spec per deploy


def test_promote_sends_all_traffic_to_the_canary_and_makes_it_stable(api):
    rollout = rollout_for(api)
    rollout.deploy(1, 10)
    rollout.deploy(2, 10)
    state = rollout.promote()
    assert (state.version, state.stable_version, state.canary) == (2, 2, False)
    assert "canaryTrafficPercent" not in api.read()["spec"]["predictor"]  # the merge patch deleted the field
    assert served(api) == {"version": "2", "canary": None, "stable": "2", "kept": True}


def test_roll_back_returns_all_traffic_to_the_stable_version(api):
    rollout = rollout_for(api)
    rollout.deploy(1, 10)
    rollout.deploy(2, 10)
    rollout.deploy(3, 10)  # replaces the undecided canary 2; stable stays 1
    state = rollout.roll_back()
    assert (state.version, state.stable_version, state.canary) == (1, 1, False)
    assert served(api) == {"version": "1", "canary": None, "stable": "1", "kept": True}


@pytest.mark.parametrize("action", ["promote", "roll_back"])
def test_no_canary_means_nothing_to_decide_and_nothing_is_sent(api, action):
    rollout = rollout_for(api)
    rollout.deploy(1, 10)
    before = api.read()["metadata"]["resourceVersion"]
    with pytest.raises(RolloutError, match="no canary in progress"):
        getattr(rollout, action)()
    assert api.read()["metadata"]["resourceVersion"] == before


def test_bad_requests_are_refused_before_any_call(api):
    rollout = rollout_for(api)
    with pytest.raises(RolloutError, match="between 1 and 99, got 100"):
        rollout.deploy(1, 100)
    rollout.deploy(1, 10)
    with pytest.raises(RolloutError, match="already serves version 1"):
        rollout.deploy(1, 10)
    assert generation(api) == 2


def unknown_token(api: Cluster) -> str:
    return "not-a-token-of-this-cluster"


def another_service_account(api: Cluster) -> str:
    return api.token("ct-serving")  # the prediction service's account: no Role in the overlay grants it this


def a_role_without_patch(api: Cluster) -> str:
    """A service account whose Role grants only get: the read succeeds, the patch is refused."""
    rbac = client.RbacAuthorizationV1Api(api.kube.api_client())
    core = client.CoreV1Api(api.kube.api_client())
    name = "ct-reader"
    core.create_namespaced_service_account(NAMESPACE, {"metadata": {"name": name}})
    rule = {"apiGroups": [GROUP], "resources": [PLURAL], "resourceNames": [NAME], "verbs": ["get"]}
    rbac.create_namespaced_role(NAMESPACE, {"metadata": {"name": name}, "rules": [rule]})
    binding = {
        "metadata": {"name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": NAMESPACE}],
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
    }
    rbac.create_namespaced_role_binding(NAMESPACE, binding)
    return api.token(name)


def deleted(api: Cluster) -> None:
    api.delete()


@contextlib.contextmanager
def an_admission_webhook_that_cannot_be_reached(api: Cluster):
    """What KServe's own validating webhook looks like to the API server when its pods are down:
    the API server cannot call it, and fails every change it must admit (HTTP 500)."""
    admission = client.AdmissionregistrationV1Api(api.kube.api_client())
    port = _closed_port()
    webhook = {
        "name": "inferenceservice.serving.kserve.io",
        "clientConfig": {"url": f"https://127.0.0.1:{port}/validate"},
        "rules": [
            {"apiGroups": [GROUP], "apiVersions": [API_VERSION], "operations": ["UPDATE"], "resources": [PLURAL]}
        ],
        "failurePolicy": "Fail",
        "sideEffects": "None",
        "admissionReviewVersions": ["v1"],
        "timeoutSeconds": 5,
    }
    name = "ct-test-unreachable-webhook"
    admission.create_validating_webhook_configuration({"metadata": {"name": name}, "webhooks": [webhook]})
    try:
        _until_an_edit_gets(api, 500)  # the API server takes up webhook configurations within about a second
        yield
    finally:
        admission.delete_validating_webhook_configuration(name)
        _until_an_edit_gets(api, 200)  # and drops them as late: the next test's edits must not meet it


def _until_an_edit_gets(api: Cluster, status: int) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            api.edit({"metadata": {"labels": {"probe": str(time.monotonic_ns())}}})
            answered = 200
        except ApiException as error:
            answered = error.status
        if answered == status:
            return
        assert time.monotonic() < deadline, f"edits still get HTTP {answered}, not {status}"
        time.sleep(0.1)


@pytest.mark.parametrize(
    "make_it_fail, action, status, hint",
    [
        (unknown_token, "read", 401, "not authenticated"),
        (another_service_account, "read", 403, "forbidden"),
        (a_role_without_patch, "patch", 403, "forbidden"),
        (deleted, "read", 404, "not found"),
        (an_admission_webhook_that_cannot_be_reached, "patch", 500, "Internal Server Error"),
    ],
)
def test_api_errors_name_the_object_and_change_nothing(api, make_it_fail, action, status, hint):
    rollout_for(api).deploy(1, 10)
    before = api.read()
    with contextlib.ExitStack() as stack:
        made = make_it_fail(api)
        if isinstance(made, contextlib.AbstractContextManager):
            made = stack.enter_context(made)
        rollout = rollout_for(api, token=made) if isinstance(made, str) else rollout_for(api)
        with pytest.raises(
            RolloutError, match=f"InferenceService ct/ct-predictor: {action} failed with HTTP {status}.*{hint}"
        ):
            rollout.deploy(2, 10)
    if status != 404:
        after = api.read()
        assert after["spec"] == before["spec"] and served(api)["version"] == "1"


def test_a_concurrent_edit_is_a_conflict_not_a_lost_update(api):
    rollout = rollout_for(api)
    rollout.deploy(1, 10)
    original_get = rollout._get

    def get_then_someone_else_edits():
        seen = original_get()
        api.edit({"metadata": {"annotations": {"edited-by": "someone else"}}})
        return seen

    rollout._get = get_then_someone_else_edits
    with pytest.raises(RolloutError, match="HTTP 409.*changed by someone else"):
        rollout.deploy(2, 10)
    assert served(api)["version"] == "1" and api.read()["metadata"]["annotations"]["edited-by"] == "someone else"


def test_re_applying_the_overlay_after_a_rollout_is_a_conflict_until_forced(api):
    rollout = rollout_for(api)
    rollout.deploy(1, 10)
    rollout.deploy(2, 10)
    docs = build("production-kserve")
    plain = api.kube.kubectl("apply", "--server-side", "-f", "-", stdin=yaml.safe_dump_all(docs))
    assert plain.returncode != 0 and "conflict" in plain.stderr and ".spec.predictor.containers" in plain.stderr
    assert served(api)["version"] == "2"
    assert api.kube.apply(docs).returncode == 0  # --force-conflicts
    # The containers are the overlay's again (unpinned: the newest model); the canary's share stays.
    assert served(api) == {"version": None, "canary": 10, "stable": "1", "kept": True}


def test_a_missing_inference_service_says_so(api):
    api.delete()
    with pytest.raises(RolloutError, match="ct/ct-predictor: read failed with HTTP 404.*is KServe installed"):
        rollout_for(api).state()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def a_server_that_never_answers():
    """A listening socket that accepts connections and never writes a byte."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []

    def accept() -> None:
        with contextlib.suppress(OSError):
            while True:
                accepted.append(listener.accept()[0])

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()
        for connection in accepted:
            connection.close()


def test_an_api_that_does_not_answer_times_out(monkeypatch):
    monkeypatch.setattr(rollout_module, "REQUEST_TIMEOUT_SECONDS", 0.5)
    with a_server_that_never_answers() as url:
        rollout = InferenceServiceRollout(
            NAMESPACE, NAME, api=client.CustomObjectsApi(client.ApiClient(client.Configuration(host=url)))
        )
        started = time.monotonic()
        with pytest.raises(RolloutError, match="read failed: .*[Tt]imeout"):
            rollout.state()
    assert time.monotonic() - started < 2.5


def test_an_unreachable_api_server_is_a_clear_error():
    api_client = client.ApiClient(client.Configuration(host=f"http://127.0.0.1:{_closed_port()}"))
    api_client.rest_client.pool_manager.connection_pool_kw["retries"] = False
    rollout = InferenceServiceRollout(NAMESPACE, NAME, api=client.CustomObjectsApi(api_client))
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
    api.set_ready(False)
    assert canary.tick(now=800) == "canary 2 rolled back: not Ready after 600 s"
    assert served(api)["version"] == "1" and store.rolled_back_versions(MODEL) == {2}


def test_controller_canary_ignores_runs_that_pushed_nothing_and_edits_by_others(api, store, tmp_path):
    canary = KServeCanary(
        rollout_for(api), store, MODEL, KServeRollout(bake_seconds=0, check_seconds=0), Home(tmp_path / "home").create()
    )
    store.update_run("run-0", decision=metadata.NOT_BLESSED)
    assert "pushed nothing" in canary.run_finished("run-0", now=0)
    assert generation(api) == 1
    for run_id, version in (("run-1", 1), ("run-2", 2)):
        pushed_run(store, run_id, version)
        canary.run_finished(run_id, now=0)
    rollout_for(api).deploy(3, 50)  # someone deploys by hand meanwhile
    assert "changed by someone else" in canary.tick(now=1)
    assert served(api)["version"] == "3"


# --- ct rollout, with a kubeconfig -----------------------------------------------------


def test_ct_rollout_through_a_kubeconfig(api, store, tmp_path, monkeypatch, capsys):
    kubeconfig = api.kube.kubeconfig(tmp_path / "kubeconfig", token=api.token())
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
