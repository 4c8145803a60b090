import yaml
from google.protobuf import json_format
from kfp import components
from kfp.kubernetes import kubernetes_executor_config_pb2

from components.image import PIPELINE_IMAGE
from pipelines.compile import COMPILED_SPEC, compile_pipeline, pipeline_version
from pipelines.continuous_training import (
    HOME_MOUNT,
    KFP_BACKEND_VERSION,
    OBJECT_STORAGE_MOUNT,
    OBJECT_STORAGE_SECRET,
    PIPELINE_NAME,
    RESOURCES,
)
from tests.support import PROJECT_ROOT

STAGES = [
    "ingest",
    "materialize",
    "statistics",
    "validate-data",
    "data-gate",
    "train",
    "evaluate",
    "validate-model",
    "infra-validate",
    "push",
]


def _steps() -> dict:
    """The pipeline's steps: the tasks inside its exit handler."""
    return _documents()[0]["components"]["comp-exit-handler-1"]["dag"]["tasks"]


def test_committed_spec_is_fresh(tmp_path):
    fresh = compile_pipeline(tmp_path / "spec.yaml")
    assert fresh.read_text() == COMPILED_SPEC.read_text(), "stale spec: run `ct compile` and commit the result"


def _documents() -> tuple[dict, dict]:
    """The pipeline spec and its Kubernetes platform spec (the volume mounts)."""
    spec, platform = yaml.safe_load_all(COMPILED_SPEC.read_text())
    return spec, platform


def test_spec_loads_with_kfps_loader_and_has_every_stage():
    pipeline = components.load_component_from_file(str(COMPILED_SPEC))
    assert pipeline.name == PIPELINE_NAME
    assert sorted(_steps()) == sorted(STAGES)


def test_every_step_mounts_the_home_volume_named_by_a_parameter():
    spec, platform = _documents()
    assert spec["root"]["inputDefinitions"]["parameters"]["home_volume"]["defaultValue"] == "ct-home"
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert sorted(executors) == sorted(spec["deploymentSpec"]["executors"])
    for name, executor in executors.items():
        [mount] = executor["pvcMount"]
        assert mount["mountPath"] == HOME_MOUNT, name
        assert mount["pvcNameParameter"] == {"componentInputParameter": "home_volume"}, name


def test_the_steps_reading_feature_tables_get_the_optional_object_storage_settings():
    spec, platform = _documents()
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    readers = {name for name, executor in executors.items() if "secretAsVolume" in executor}
    assert readers == {"exec-ingest", "exec-materialize"}
    for name in readers:
        [secret] = executors[name]["secretAsVolume"]
        assert (secret["secretName"], secret["mountPath"], secret["optional"]) == (
            OBJECT_STORAGE_SECRET,
            OBJECT_STORAGE_MOUNT,
            True,
        )
        env = {e["name"]: e["value"] for e in spec["deploymentSpec"]["executors"][name]["container"]["env"]}
        assert env == {
            "AWS_CONFIG_FILE": f"{OBJECT_STORAGE_MOUNT}/config",
            "AWS_SHARED_CREDENTIALS_FILE": f"{OBJECT_STORAGE_MOUNT}/credentials",
        }


def test_every_executor_runs_the_pipeline_image_without_installing_anything():
    executors = _documents()[0]["deploymentSpec"]["executors"]
    assert len(executors) == len(STAGES) + 1  # and finalize
    for name, executor in executors.items():
        container = executor["container"]
        assert container["image"] == PIPELINE_IMAGE, name
        assert "pip install" not in " ".join(container["command"]), name


def test_train_waits_for_data_validation():
    train = _steps()["train"]
    assert "validate-data" in train["dependentTasks"]
    assert train["inputs"]["artifacts"]["anomalies"]["taskOutputArtifact"]["producerTask"] == "validate-data"


def test_pipeline_version_names_the_package_and_the_spec():
    assert pipeline_version().startswith(PIPELINE_IMAGE.rsplit(":", 1)[1] + "+")
    assert len(pipeline_version().split("+")[1]) == 12


def test_the_platform_config_uses_only_fields_kfp_backends_from_2_5_accept():
    """Strictly parsed, as KFP's driver parsed it before 2.5.0 (which rejected unknown fields):
    the proto kfp-kubernetes 1.5.0 compiles against is the one KFP backend 2.5.0 builds with;
    later backends keep those fields. The spec needs 2.14 for retries inside the exit handler."""
    _, platform = _documents()
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for executor in executors.values():
        json_format.ParseDict(executor, kubernetes_executor_config_pb2.KubernetesExecutorConfig())  # raises on unknown
    assert KFP_BACKEND_VERSION == "2.14.0"
    readme = (PROJECT_ROOT / "README.md").read_text()
    assert f"PIPELINE_VERSION={KFP_BACKEND_VERSION}" in readme
    kind = (PROJECT_ROOT / "manifests" / "overlays" / "kind" / "kustomization.yaml").read_text()
    assert f"Kubeflow Pipelines standalone {KFP_BACKEND_VERSION} or newer" in kind


def test_every_step_declares_resources_a_timeout_and_retries_only_where_a_retry_can_help():
    spec, platform = _documents()
    tasks = {**_steps(), "finalize": spec["root"]["dag"]["tasks"]["finalize"]}
    kubernetes = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for task_name, task in tasks.items():
        executor = task["componentRef"]["name"].replace("comp-", "exec-")
        resources = spec["deploymentSpec"]["executors"][executor]["container"]["resources"]
        declared = RESOURCES[task_name]
        assert (resources["resourceCpuRequest"], resources["resourceMemoryRequest"]) == (declared.cpu, declared.memory)
        assert (resources["resourceCpuLimit"], resources["resourceMemoryLimit"]) == (
            declared.cpu_limit,
            declared.memory_limit,
        )
        assert kubernetes[executor]["activeDeadlineSeconds"] == str(declared.timeout_seconds), task_name
        retried = task.get("retryPolicy", {}).get("maxRetryCount", 0)
        assert retried == (2 if task_name in ("materialize", "finalize") else 0), task_name


def test_the_run_decision_is_the_pipelines_output():
    spec, _ = _documents()
    assert spec["root"]["outputDefinitions"]["parameters"]["Output"]["parameterType"] == "STRING"
    assert spec["root"]["dag"]["outputs"]["parameters"]["Output"]["valueFromParameter"] == {
        "outputParameterKey": "Output",
        "producerSubtask": "finalize",
    }


def test_every_step_runs_inside_the_exit_handler_and_finalize_runs_whatever_happened():
    tasks = _documents()[0]["root"]["dag"]["tasks"]
    assert sorted(tasks) == ["exit-handler-1", "finalize"]
    assert tasks["finalize"]["dependentTasks"] == ["exit-handler-1"]
    assert tasks["finalize"]["triggerPolicy"] == {"strategy": "ALL_UPSTREAM_TASKS_COMPLETED"}


def test_data_validation_completes_and_a_gate_stops_the_run_before_training():
    tasks = _steps()
    assert (
        tasks["data-gate"]["inputs"]["artifacts"]["anomalies"]["taskOutputArtifact"]["producerTask"] == "validate-data"
    )
    assert "data-gate" in tasks["train"]["dependentTasks"]
