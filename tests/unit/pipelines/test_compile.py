import yaml
from kfp import components

from components.image import PIPELINE_IMAGE
from pipelines.compile import COMPILED_SPEC, compile_pipeline, pipeline_version
from pipelines.continuous_training import HOME_MOUNT, OBJECT_STORAGE_MOUNT, OBJECT_STORAGE_SECRET, PIPELINE_NAME

STAGES = [
    "ingest",
    "materialize",
    "statistics",
    "validate-data",
    "train",
    "evaluate",
    "validate-model",
    "infra-validate",
    "push",
]


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
    assert sorted(_documents()[0]["root"]["dag"]["tasks"]) == sorted(STAGES)


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
    assert len(executors) == len(STAGES)
    for name, executor in executors.items():
        container = executor["container"]
        assert container["image"] == PIPELINE_IMAGE, name
        assert "pip install" not in " ".join(container["command"]), name


def test_train_waits_for_data_validation():
    train = _documents()[0]["root"]["dag"]["tasks"]["train"]
    assert "validate-data" in train["dependentTasks"]
    assert train["inputs"]["artifacts"]["anomalies"]["taskOutputArtifact"]["producerTask"] == "validate-data"


def test_pipeline_version_names_the_package_and_the_spec():
    assert pipeline_version().startswith(PIPELINE_IMAGE.rsplit(":", 1)[1] + "+")
    assert len(pipeline_version().split("+")[1]) == 12
