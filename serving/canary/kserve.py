"""Moves a KServe InferenceService to a pushed model version: canary, promote, roll back.

In the cluster the prediction service can run as a KServe InferenceService whose predictor
is our own image, pinned to one model version by the container's `CT_MODEL_VERSION`
(`ct serve --model-version`). A new version is a new predictor revision; KServe sends
`canaryTrafficPercent` of the traffic to it and the rest to the last promoted revision.

Every change is a single merge PATCH that carries the object's `resourceVersion`: if
someone changed the InferenceService in between, the API server answers 409 and nothing
is applied, so a rollout is never half-done. The version last promoted is kept in an
annotation, which is what a rollback returns to.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from typing import Any

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from components.common import metadata
from components.common.errors import ConfigError, CtError
from components.common.home import Home
from components.common.metadata import MetadataStore
from serving.canary.judge import judge_canary, logged_versions
from serving.config import MODEL_VERSION_ENV, KServeRollout

GROUP, API_VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
STABLE_ANNOTATION = "continuous-training.io/stable-version"
REQUEST_TIMEOUT_SECONDS = 30


class RolloutError(CtError):
    """The Kubernetes API refused or did not answer; nothing was changed by the failing call."""


@dataclasses.dataclass(frozen=True)
class RolloutState:
    version: int | None  # the version the latest predictor revision serves
    stable_version: int | None  # the version last promoted (what a rollback returns to)
    canary_percent: int | None  # None when no canary is in progress
    ready: bool  # KServe's Ready condition

    @property
    def canary(self) -> bool:
        return self.canary_percent is not None


class InferenceServiceRollout:
    """Canary, promotion and rollback of one InferenceService through the `kubernetes` client."""

    def __init__(self, namespace: str, name: str, api: client.CustomObjectsApi | None = None):
        self.namespace = namespace
        self.name = name
        self.api = api or client.CustomObjectsApi()

    @classmethod
    def in_cluster_or_kubeconfig(cls, namespace: str, name: str) -> "InferenceServiceRollout":
        """Uses the pod's service account in a cluster, else the user's kubeconfig."""
        from kubernetes import config

        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))  # read now, not at import
        return cls(namespace, name)

    @property
    def _where(self) -> str:
        return f"InferenceService {self.namespace}/{self.name}"

    def state(self) -> RolloutState:
        return _state(self._get())

    def deploy(self, version: int, canary_percent: int) -> RolloutState:
        """Rolls out `version`: as a canary taking `canary_percent` of the traffic, or, when
        nothing is pinned yet (the first model), to all traffic at once.

        Raises:
            RolloutError: percent outside 1..99, the version already served, or the API
                refused (nothing changed).
        """
        if not 0 < canary_percent < 100:
            raise RolloutError(f"{self._where}: canary percent must be between 1 and 99, got {canary_percent}")
        current = self._get()
        state = _state(current)
        if state.version == version:
            raise RolloutError(f"{self._where}: already serves version {version}")
        if state.version is None:
            return self._patch(current, version, canary_percent=None, stable=version)
        # An undecided canary is replaced; the stable version stays what was last promoted.
        stable = state.stable_version if state.canary else state.version
        return self._patch(current, version, canary_percent=canary_percent, stable=stable)

    def promote(self) -> RolloutState:
        """Sends all traffic to the canary's revision; its version becomes the stable one."""
        current = self._get()
        state = self._in_canary(current, "promote")
        return self._patch(current, state.version, canary_percent=None, stable=state.version)

    def roll_back(self) -> RolloutState:
        """Returns all traffic to a revision serving the stable version."""
        current = self._get()
        state = self._in_canary(current, "roll back")
        if state.stable_version is None:
            raise RolloutError(f"{self._where}: no stable version recorded ({STABLE_ANNOTATION}) to roll back to")
        return self._patch(current, state.stable_version, canary_percent=None, stable=state.stable_version)

    def _in_canary(self, current: dict, action: str) -> RolloutState:
        state = _state(current)
        if not state.canary:
            raise RolloutError(f"{self._where}: no canary in progress to {action} (serving version {state.version})")
        return state

    def _get(self) -> dict:
        return self._call(
            "read", self.api.get_namespaced_custom_object, GROUP, API_VERSION, self.namespace, PLURAL, self.name
        )

    def _patch(
        self, current: dict, version: int | None, canary_percent: int | None, stable: int | None
    ) -> RolloutState:
        body = patch_body(current, version, canary_percent, stable)
        updated = self._call(
            "patch",
            self.api.patch_namespaced_custom_object,
            GROUP,
            API_VERSION,
            self.namespace,
            PLURAL,
            self.name,
            body,
        )
        return _state(updated)

    def _call(self, action: str, method, *args) -> Any:
        try:
            # (connect, read): the client ignores a single timeout unless it is an int.
            return method(*args, _request_timeout=(REQUEST_TIMEOUT_SECONDS, REQUEST_TIMEOUT_SECONDS))
        except ApiException as error:
            hint = {
                401: "not authenticated (check the service account token or kubeconfig)",
                403: "forbidden (the Role grants get and patch on this InferenceService only)",
                404: "not found (is KServe installed and the manifests applied?)",
                409: "changed by someone else meanwhile; nothing was applied, try again",
            }.get(error.status, "")
            raise RolloutError(
                f"{self._where}: {action} failed with HTTP {error.status} {error.reason}{': ' + hint if hint else ''}"
            ) from None
        except (urllib3.exceptions.HTTPError, OSError) as error:  # timeouts, refused connections
            raise RolloutError(f"{self._where}: {action} failed: {type(error).__name__}: {error}") from None


def patch_body(current: dict, version: int | None, canary_percent: int | None, stable: int | None) -> dict:
    """The merge patch that pins the predictor to `version` with the given canary share.

    A merge patch replaces lists whole, so the containers list is sent complete with only
    the first container's `CT_MODEL_VERSION` changed; `None` deletes the canary percent.
    """
    containers = copy.deepcopy(current["spec"]["predictor"]["containers"])
    env = [e for e in containers[0].get("env", []) if e["name"] != MODEL_VERSION_ENV]
    containers[0]["env"] = env + [{"name": MODEL_VERSION_ENV, "value": str(version)}]
    return {
        "metadata": {
            "resourceVersion": current["metadata"]["resourceVersion"],
            "annotations": {STABLE_ANNOTATION: None if stable is None else str(stable)},
        },
        "spec": {"predictor": {"canaryTrafficPercent": canary_percent, "containers": containers}},
    }


def _state(isvc: dict) -> RolloutState:
    predictor = isvc.get("spec", {}).get("predictor", {})
    env = {e["name"]: e.get("value") for e in (predictor.get("containers") or [{}])[0].get("env", [])}
    stable = (isvc.get("metadata", {}).get("annotations") or {}).get(STABLE_ANNOTATION)
    conditions = isvc.get("status", {}).get("conditions", [])
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
    percent = predictor.get("canaryTrafficPercent")
    return RolloutState(
        version=_int(env.get(MODEL_VERSION_ENV)),
        stable_version=_int(stable),
        canary_percent=None if percent is None or percent >= 100 else int(percent),
        ready=ready,
    )


def _int(value: Any) -> int | None:
    return int(value) if value not in (None, "") else None


class KServeCanary:
    """What the controller does with a pushed version when serving runs on KServe.

    After a run pushes version N, N is deployed as a canary. Once it has baked for
    `bake_seconds`, it is rolled back if the InferenceService is not Ready (its revision
    never became healthy); otherwise it is judged as the in-process service judges its
    canaries (serving/canary/judge.py `judge_canary`): on online AUC against the stable
    version, over the predictions both revisions logged since the deployment joined with
    the feedback received for them (the request and feedback logs on the home volume,
    checked every `check_seconds`). It waits until both have `min_labelled` labels. Each
    verdict is recorded in ML Metadata, so a rolled-back version stops being the
    pipeline's baseline.
    """

    def __init__(
        self,
        rollout: InferenceServiceRollout,
        store: MetadataStore,
        model_name: str,
        settings: KServeRollout,
        home: Home,
    ):
        self.rollout = rollout
        self.store = store
        self.model_name = model_name
        self.settings = settings
        self.home = home
        self.baking: tuple[int, float] | None = None  # (version, deployed at)
        self._checked = float("-inf")

    def run_finished(self, run_id: str, now: float) -> str:
        """Deploys the version the run pushed, if it pushed one; says what happened."""
        run = self.store.run(run_id)
        if run.decision != metadata.PUSHED:
            return f"run {run_id} pushed nothing ({run.decision or 'no decision'})"
        version = int(run.properties["version"])
        state = self.rollout.deploy(version, self.settings.canary_percent)
        if not state.canary:
            return f"version {version} deployed to all traffic (the first model)"
        self.baking = (version, now)
        return f"version {version} deployed as a canary at {state.canary_percent}%"

    def tick(self, now: float) -> str | None:
        """Promotes or rolls back a canary once it can be judged; None while there is nothing to say."""
        if self.baking is None or now - self.baking[1] < self.settings.bake_seconds:
            return None
        if now - self._checked < self.settings.check_seconds:
            return None
        self._checked = now
        version, deployed_at = self.baking
        state = self.rollout.state()
        if state.version != version or not state.canary:
            self.baking = None
            return f"canary {version} was changed by someone else (now version {state.version}); left alone"
        numbers = {"canary_percent": float(state.canary_percent or 0)}
        if not state.ready:
            decision, reason = metadata.ROLLED_BACK, f"not Ready after {self.settings.bake_seconds:.0f} s"
        else:
            stable, canary = logged_versions(
                self.home.request_log, self.home.feedback_log, deployed_at, state.stable_version, version
            )
            verdict = judge_canary(
                stable,
                canary,
                self.settings.canary_test,
                max_error_rate=1.0,
            )  # failures show as not Ready
            if verdict is None:
                return None  # not enough labels yet
            decision, reason, numbers = verdict.decision, verdict.reason, {**numbers, **verdict.numbers}
        if decision == metadata.PROMOTED:
            self.rollout.promote()
        else:
            self.rollout.roll_back()
        self.baking = None
        self.store.record_canary_decision(self.model_name, version, decision, reason, numbers)
        return f"canary {version} {decision}: {reason}"


def change_rollout(
    action: str,
    version: int | None,
    canary_percent: int,
    namespace: str,
    name: str,
    model_name: str,
    metadata_connection: str = "",
) -> RolloutState:
    """`ct rollout`: `status`, `deploy` a version, `promote` or `rollback` the canary, by hand
    (the in-cluster service account, else the kubeconfig). A promotion or rollback is recorded
    in ML Metadata when a connection is given, as the controller's verdicts are.

    Raises:
        ConfigError: a version without deploy, or deploy without one.
        RolloutError: the Kubernetes API refused or failed (nothing changed).
    """
    if (action == "deploy") != (version is not None):
        raise ConfigError("a version is given with deploy, and only with deploy")
    rollout = InferenceServiceRollout.in_cluster_or_kubeconfig(namespace, name)
    before = rollout.state()
    if action == "deploy":
        return rollout.deploy(version, canary_percent)
    if action == "status":
        return before
    after = rollout.promote() if action == "promote" else rollout.roll_back()
    if metadata_connection:
        decision = metadata.PROMOTED if action == "promote" else metadata.ROLLED_BACK
        MetadataStore(metadata_connection).record_canary_decision(
            model_name, before.version, decision, f"ct rollout {action}", {}
        )
    return after
