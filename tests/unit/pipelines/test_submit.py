"""`ct submit` and `ct schedule` through the real kfp.Client, against tests/support/kfp_api_stub.py:
a local server with only the KFP API endpoints used (no cluster can run here)."""

import pytest

from pipelines.cli import main
from pipelines.compile import COMPILED_SPEC, pipeline_version
from pipelines.continuous_training import PIPELINE_NAME
from pipelines.submit import KfpApi, SubmitError
from tests.support.kfp_api_stub import KfpApiStub

PARAMETERS = {
    "data_root": "/var/lib/ct/data",
    "metadata_connection": "grpc://metadata-grpc-service.kubeflow:8080",
    "model_repository": "/var/lib/ct/models",
    "run_id": "run-1",
    "epochs": 3,
}


@pytest.fixture
def api():
    stub = KfpApiStub()
    yield stub
    stub.shutdown()
    stub.server_close()


def test_submit_uploads_the_spec_once_and_creates_a_run_with_its_parameters(api):
    kfp_api = KfpApi(api.url)
    first = kfp_api.submit_run(PARAMETERS, "continuous-training", "run-1")
    second = KfpApi(api.url).submit_run({**PARAMETERS, "run_id": "run-2"}, "continuous-training", "run-2")
    assert first.url == f"{api.url}/#/runs/details/{first.id}"
    [(query, package)] = api.calls("POST", "/apis/v2beta1/pipelines/upload")
    assert query["name"] == [PIPELINE_NAME] and COMPILED_SPEC.read_bytes() in package
    [(query, _)] = api.calls("POST", "/apis/v2beta1/pipelines/upload_version")
    assert query["name"] == [pipeline_version()]
    assert len(api.experiments) == 1 and api.experiments[0]["display_name"] == "continuous-training"
    [run_1, run_2] = api.runs
    our_version = [
        v
        for v in api.versions[run_1["pipeline_version_reference"]["pipeline_id"]]
        if v["display_name"] == pipeline_version()
    ][0]
    assert run_1["pipeline_version_reference"]["pipeline_version_id"] == our_version["pipeline_version_id"]
    assert run_1["display_name"] == "run-1" and run_1["experiment_id"] == api.experiments[0]["experiment_id"]
    assert run_1["runtime_config"]["parameters"] == PARAMETERS
    assert run_2["runtime_config"]["parameters"]["run_id"] == "run-2"
    assert second.id != first.id


def test_schedule_is_idempotent_with_concurrency_one_and_no_catchup(api):
    created = KfpApi(api.url).schedule("0 6 * * *", PARAMETERS, "continuous-training", "nightly")
    again = KfpApi(api.url).schedule("0 6 * * *", PARAMETERS, "continuous-training", "nightly")
    assert created.created and not again.created and again.id == created.id
    [recurring] = api.recurring_runs
    assert recurring["trigger"]["cron_schedule"]["cron"] == "0 0 6 * * *"
    assert int(recurring["max_concurrency"]) == 1 and recurring["no_catchup"] is True
    assert recurring["runtime_config"]["parameters"] == PARAMETERS


def test_bad_cron_is_refused_before_anything_is_uploaded(api, capsys):
    with pytest.raises(ValueError, match="expected 5 fields"):
        KfpApi(api.url).schedule("daily", PARAMETERS, "continuous-training", "nightly")
    assert [path for _, path, _, _ in api.requests] == ["/apis/v2beta1/healthz"]
    assert (
        main(
            [
                "schedule",
                "--host",
                api.url,
                "--cron",
                "daily",
                "--param",
                "data_root=/d",
                "--param",
                "model_repository=/m",
            ]
        )
        == 1
    )
    assert "cron 'daily': expected 5 fields" in capsys.readouterr().err
    assert api.recurring_runs == [] and len(api.requests) == 1


@pytest.mark.parametrize(
    "status, message",
    [
        (401, "HTTP 401 .*not authenticated"),
        (404, "HTTP 404"),
        (409, "HTTP 409"),
        (500, "HTTP 500"),
    ],
)
def test_api_errors_name_the_call_and_create_nothing(api, status, message):
    api.fail["/apis/v2beta1/experiments"] = (status, 0)
    with pytest.raises(SubmitError, match=f"finding or creating the experiment failed: {message}"):
        KfpApi(api.url).submit_run(PARAMETERS, "continuous-training", "run-1")
    assert api.runs == [] and api.recurring_runs == []


def test_unreachable_api_is_a_clear_error():
    with pytest.raises(SubmitError, match="cannot reach the KFP API at http://127.0.0.1:9"):
        KfpApi("http://127.0.0.1:9")


def test_cli_prints_the_run_and_its_dashboard_url(api, capsys):
    assert (
        main(
            [
                "submit",
                "--host",
                api.url,
                "--param",
                "data_root=/var/lib/ct/data",
                "--param",
                "model_repository=/var/lib/ct/models",
                "--param",
                "epochs=3",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    [run] = api.runs
    assert run["run_id"] in out and f"{api.url}/#/runs/details/{run['run_id']}" in out
    parameters = run["runtime_config"]["parameters"]
    assert (
        parameters["epochs"] == 3 and parameters["trigger"] == "manual" and parameters["run_id"] == run["display_name"]
    )


def test_cli_refuses_a_bad_param_before_calling_the_api(api, capsys):
    assert main(["submit", "--host", api.url, "--param", "epoch=3"]) == 1
    assert "--param epoch: unknown parameter" in capsys.readouterr().err and api.requests == []


def test_cli_api_failure_exits_non_zero(api, capsys):
    api.fail["/apis/v2beta1/runs"] = (500, 0)
    assert main(["submit", "--host", api.url, "--param", "data_root=/d", "--param", "model_repository=/m"]) == 1
    assert "creating the run failed: HTTP 500" in capsys.readouterr().err
    assert api.runs == []


def test_the_controller_submits_through_the_same_code_and_follows_the_run(api, tmp_path, flight_months):
    from components.common.metadata import MetadataStore
    from pipelines.triggers.config import TriggerConfig
    from pipelines.triggers.controller import Controller, KfpLauncher
    from pipelines.triggers.sources import MANUAL, Firing
    from tests.support.spans import write_month

    write_month(tmp_path / "data", "2013-01", flight_months["2013-01"])
    config = TriggerConfig(
        home=tmp_path,
        data_root=tmp_path / "data",
        cooldown_seconds=0,
        kfp_host=api.url,
        metadata="grpc://metadata-grpc-service.kubeflow:8080",
        parameters={"data_root": "/var/lib/ct/data", "model_repository": "/var/lib/ct/models"},
    )

    class Once:
        name = MANUAL
        fired = [Firing(MANUAL, "first model", 0)]

        def check(self, now):
            firings, self.fired = self.fired, []
            return firings

    controller = Controller(config, [Once()], KfpLauncher(config), MetadataStore(f"sqlite:///{tmp_path / 'm.sqlite'}"))
    controller.tick()
    [run] = api.runs
    parameters = run["runtime_config"]["parameters"]
    assert parameters["run_id"] == controller.running == run["display_name"]
    assert (parameters["trigger"], parameters["reason"]) == ("manual", "manual: first model")
    assert parameters["metadata_connection"] == "grpc://metadata-grpc-service.kubeflow:8080"
    controller.tick()
    assert controller.running is not None  # still RUNNING on the API
    run["state"] = "SUCCEEDED"
    controller.tick()
    assert controller.running is None and controller.events[-1].reason == "exit code 0"


def test_a_hung_api_times_out_with_a_clear_error(api):
    kfp_api = KfpApi(api.url, timeout=1.0)
    api.fail["/apis/v2beta1/experiments"] = (200, 5.0)  # answers, but only after 5 s
    with pytest.raises(SubmitError, match="finding or creating the experiment failed: .*(timed out|Timeout)"):
        kfp_api.submit_run(PARAMETERS, "continuous-training", "run-1")
    assert api.runs == []


def test_in_a_multi_user_pod_every_request_carries_the_projected_token(api, tmp_path, monkeypatch):
    """kfp.Client, given a host, sends no credentials by itself; a controller pod of multi-user
    Kubeflow authenticates with its projected service-account token (manifests: multi-user)."""
    token = tmp_path / "token"
    token.write_text("projected-token-1")
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(token))
    kfp_api = KfpApi(api.url, "ct")
    kfp_api.submit_run(PARAMETERS, "continuous-training", "run-1")
    token.write_text("projected-token-2")  # the kubelet rotates it
    kfp_api.submit_run({**PARAMETERS, "run_id": "run-2"}, "continuous-training", "run-2")
    assert set(api.authorizations[:3]) == {"Bearer projected-token-1"}
    assert api.authorizations[-1] == "Bearer projected-token-2"


def test_without_a_token_nothing_is_sent_as_credentials(api):
    KfpApi(api.url).submit_run(PARAMETERS, "continuous-training", "run-1")
    assert set(api.authorizations) == {None}
