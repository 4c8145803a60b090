"""Runs and recurring runs on a Kubeflow Pipelines cluster, through the real `kfp.Client`.

The compiled spec is uploaded once per pipeline version (its name is the package version
and the spec's fingerprint, so submitting the same code twice reuses it); a run or a
recurring run is then created from that version in the named experiment.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any, Mapping

from components.common.errors import ConfigError, CtError
from components.common.home import KUBEFLOW_METADATA
from pipelines.compile import COMPILED_SPEC, pipeline_version
from pipelines.config import KFP_INTERNALS_CHECKED_ON, check_parameter_values, parse_parameters
from pipelines.continuous_training import PIPELINE_NAME
from pipelines.local_run import new_run_id, pipeline_parameters
from pipelines.triggers.cron import parse_cron

log = logging.getLogger(__name__)


class SubmitError(CtError):
    """The KFP API refused or failed; the message says which call and why."""


@dataclasses.dataclass(frozen=True)
class Submitted:
    kind: str  # "run" or "recurring run"
    id: str
    url: str
    created: bool


def _reason(error: Exception) -> str:
    status = getattr(error, "status", None)
    reason = getattr(error, "reason", None) or str(error).splitlines()[0]
    hint = {
        401: " (not authenticated: check the token or the dashboard's auth proxy)",
        403: " (not allowed in this namespace)",
    }.get(status, "")
    return f"HTTP {status} {reason}{hint}" if status else f"{type(error).__name__}: {reason}"


def _call(what: str, function, *args, **kwargs):
    try:
        return function(*args, **kwargs)
    except SubmitError:
        raise
    except Exception as error:
        raise SubmitError(f"{what} failed: {_reason(error)}") from None


def _time_out_requests(seconds: float) -> None:
    """kfp.Client sends every request with no timeout (its constructor's health check
    included), so a hung API would hang us: its REST layer is given a default that an
    explicit per-request timeout still overrides. There is no per-client setting to do this
    with, so the class is patched, once, and only on the kfp versions it was checked on."""
    import kfp
    from kfp_server_api import rest

    if not kfp.__version__.startswith(KFP_INTERNALS_CHECKED_ON):
        log.warning(
            "kfp %s: KFP API requests are sent without a timeout (checked on %sx only)",
            kfp.__version__,
            KFP_INTERNALS_CHECKED_ON,
        )
        return

    if not hasattr(rest.RESTClientObject, "_untimed_request"):
        rest.RESTClientObject._untimed_request = rest.RESTClientObject.request
    untimed = rest.RESTClientObject._untimed_request

    def request(self, *args, _request_timeout=None, **kwargs):
        # (connect, read): the REST layer takes a single number only as an int.
        return untimed(self, *args, _request_timeout=_request_timeout or (seconds, seconds), **kwargs)

    rest.RESTClientObject.request = request


def service_account_token():
    """In a pod of multi-user Kubeflow: the projected service-account token (audience
    `pipelines.kubeflow.org`) that KFP's API authenticates, at kfp's path or the one
    `KF_PIPELINES_SA_TOKEN_PATH` names; re-read at each request, as the kubelet rotates it.
    kfp.Client sends none by itself when given a host. None outside such a pod."""
    from kfp.client import KF_PIPELINES_SA_TOKEN_ENV, KF_PIPELINES_SA_TOKEN_PATH, ServiceAccountTokenVolumeCredentials

    path = Path(os.environ.get(KF_PIPELINES_SA_TOKEN_ENV) or KF_PIPELINES_SA_TOKEN_PATH)
    return ServiceAccountTokenVolumeCredentials(str(path)) if path.is_file() else None


TERMINAL_STATES = {"SUCCEEDED": True, "SKIPPED": True, "FAILED": False, "CANCELED": False}


REQUEST_TIMEOUT_SECONDS = 30.0


class KfpApi:
    """One connection to a Kubeflow Pipelines API, through `kfp.Client`, with a timeout on every request."""

    def __init__(self, host: str, namespace: str | None = None, timeout: float = REQUEST_TIMEOUT_SECONDS):
        import kfp

        self.host = host.rstrip("/")
        self.namespace = namespace
        _time_out_requests(timeout)
        try:
            self.client = kfp.Client(host=host, namespace=namespace, credentials=service_account_token())
        except Exception as error:  # kfp raises urllib3 errors, ApiException or ValueError alike on a bad host
            raise SubmitError(f"cannot reach the KFP API at {host}: {_reason(error)}") from None

    def ensure_pipeline_version(self, spec: Path = COMPILED_SPEC) -> tuple[str, str]:
        """The ids of the pipeline and of this code's version of it, uploading what is missing."""
        client, version_name = self.client, pipeline_version()
        pipeline_id = _call("looking up the pipeline", client.get_pipeline_id, PIPELINE_NAME)
        if pipeline_id is None:
            pipeline = _call(
                "uploading the pipeline",
                client.upload_pipeline,
                str(spec),
                pipeline_name=PIPELINE_NAME,
                description="Continuous training: retrain, validate and push on new data.",
            )
            pipeline_id = pipeline.pipeline_id
        versions = _call(
            "listing pipeline versions", client.list_pipeline_versions, pipeline_id=pipeline_id, page_size=100
        )
        for version in versions.pipeline_versions or []:
            if version.display_name == version_name:
                return pipeline_id, version.pipeline_version_id
        version = _call(
            "uploading the pipeline version",
            client.upload_pipeline_version,
            str(spec),
            pipeline_version_name=version_name,
            pipeline_id=pipeline_id,
        )
        return pipeline_id, version.pipeline_version_id

    def _experiment_id(self, experiment: str) -> str:
        return _call(
            "finding or creating the experiment", self.client.create_experiment, experiment, namespace=self.namespace
        ).experiment_id

    def submit_run(self, parameters: Mapping[str, Any], experiment: str, run_name: str) -> Submitted:
        """Creates one run of this code's pipeline version."""
        pipeline_id, version_id = self.ensure_pipeline_version()
        run = _call(
            "creating the run",
            self.client.run_pipeline,
            experiment_id=self._experiment_id(experiment),
            job_name=run_name,
            params=dict(parameters),
            pipeline_id=pipeline_id,
            version_id=version_id,
        )
        return Submitted("run", run.run_id, f"{self.host}/#/runs/details/{run.run_id}", True)

    def schedule(self, cron: str, parameters: Mapping[str, Any], experiment: str, name: str) -> Submitted:
        """A recurring run (at most one at a time, no catch-up); asking again with the same name changes nothing.

        Args:
            cron: Five fields, as `ct watch` and Kubernetes read them; KFP's six-field form
                (seconds first) is built from it.
        """
        parse_cron(cron)
        pipeline_id, version_id = self.ensure_pipeline_version()
        experiment_id = self._experiment_id(experiment)
        existing = _call(
            "listing recurring runs", self.client.list_recurring_runs, experiment_id=experiment_id, page_size=100
        )
        for recurring in existing.recurring_runs or []:
            if recurring.display_name == name:
                return Submitted(
                    "recurring run",
                    recurring.recurring_run_id,
                    f"{self.host}/#/recurringrun/details/{recurring.recurring_run_id}",
                    False,
                )
        recurring = _call(
            "creating the recurring run",
            self.client.create_recurring_run,
            experiment_id=experiment_id,
            job_name=name,
            cron_expression=f"0 {cron}",
            max_concurrency=1,
            no_catchup=True,
            params=dict(parameters),
            pipeline_id=pipeline_id,
            version_id=version_id,
        )
        return Submitted(
            "recurring run",
            recurring.recurring_run_id,
            f"{self.host}/#/recurringrun/details/{recurring.recurring_run_id}",
            True,
        )

    def run_succeeded(self, run_id: str) -> bool | None:
        """None while the run goes on; then whether it succeeded."""
        state = str(_call("reading the run", self.client.get_run, run_id).state or "")
        return TERMINAL_STATES.get(state)


def cluster_parameters(assignments: list[str]) -> dict[str, Any]:
    """`--param` values for a cluster run, checked; the metadata connection defaults to Kubeflow's.

    Raises:
        ConfigError: an unknown name, a wrong type, a value out of range, or no data_root / model_repository.
    """
    declarations = pipeline_parameters(include_wired=True)
    given = parse_parameters(assignments, {name: kind for name, (kind, _) in declarations.items()})
    check_parameter_values(given, {name: default for name, (_, default) in declarations.items()})
    parameters = {"metadata_connection": KUBEFLOW_METADATA, **given}
    missing = [name for name in ("data_root", "model_repository") if name not in parameters]
    if missing:
        raise ConfigError(f"--param {missing[0]}=...: required for a cluster run (a path or URI the steps can read)")
    return parameters


def submit(host: str, namespace: str | None, experiment: str, assignments: list[str], reason: str) -> Submitted:
    """`ct submit`: one manual run of this code's pipeline version."""
    parameters = cluster_parameters(assignments)
    run_id = parameters.setdefault("run_id", new_run_id())
    parameters.update(trigger="manual", reason=reason)
    return KfpApi(host, namespace).submit_run(parameters, experiment, run_id)


def schedule(
    host: str, namespace: str | None, experiment: str, assignments: list[str], reason: str, cron: str, name: str
) -> Submitted:
    """`ct schedule`: a recurring run (idempotent by name); each run falls back to KFP's job id."""
    parse_cron(cron)
    parameters = cluster_parameters(assignments)
    parameters.update(run_id="", trigger="schedule", reason=reason or f"cron '{cron}'")
    return KfpApi(host, namespace).schedule(cron, parameters, experiment, name)
