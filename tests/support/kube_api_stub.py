"""A local HTTP server with only the Kubernetes API calls `serving/canary/kserve.py` makes:
GET and merge-PATCH of KServe InferenceServices. No cluster can run here: this stands in
for the remote API server, so the real `kubernetes` client is tested against real HTTP,
with the API server's optimistic concurrency (a stale resourceVersion gets 409)."""

from __future__ import annotations

import copy
import json
import re
import time

from tests.support.api_stub import ApiStub, JsonHandler

PATH = re.compile(r"/apis/serving\.kserve\.io/v1beta1/namespaces/([\w-]+)/inferenceservices/([\w-]+)")


def inference_service(namespace: str = "ct", name: str = "ct-predictor", ready: bool = True) -> dict:
    """An InferenceService as the manifests create it (unpinned), with KServe's status."""
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": name, "namespace": namespace, "resourceVersion": "1", "annotations": {}},
        "spec": {
            "predictor": {
                "minReplicas": 1,
                "containers": [
                    {
                        "name": "kserve-container",
                        "image": "ghcr.io/continuous-training/ct-pipeline:0.1.0",
                        "args": ["serve", "--port", "8080"],
                        "env": [{"name": "TZ", "value": "UTC"}],
                    }
                ],
            }
        },
        "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


def merge_patch(target, patch):
    """RFC 7386 JSON merge patch, as the API server applies `application/merge-patch+json`."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


class KubeApiStub(ApiStub):
    def __init__(self, *objects: dict):
        super().__init__(_Handler)
        self.objects = {(o["metadata"]["namespace"], o["metadata"]["name"]): o for o in objects}
        self.requests: list[tuple[str, str, str, dict | None]] = []  # method, path, content type, body
        self.fail: dict[str, tuple[int, float]] = {}  # method -> (status, delay seconds)

    def patches(self) -> list[dict]:
        return [body for method, _, _, body in self.requests if method == "PATCH"]

    def set_ready(self, namespace: str, name: str, ready: bool) -> None:
        self.objects[namespace, name]["status"] = {"conditions": [{"type": "Ready", "status": str(ready)}]}


class _Handler(JsonHandler):
    server: KubeApiStub

    def _status(self, code: int, reason: str, message: str) -> None:
        self.reply(
            code,
            {
                "kind": "Status",
                "apiVersion": "v1",
                "status": "Failure",
                "message": message,
                "reason": reason,
                "code": code,
            },
        )

    def handle_method(self, method: str) -> None:
        raw = self.body()
        body = json.loads(raw) if raw else None
        self.server.requests.append((method, self.path, self.headers.get("Content-Type", ""), body))
        if method in self.server.fail:
            status, delay = self.server.fail[method]
            time.sleep(delay)
            return self._status(status, "StubFailure", f"stub failure {status}")
        match = PATH.fullmatch(self.path.split("?")[0])
        key = (match[1], match[2]) if match else None
        if key not in self.server.objects:
            return self._status(404, "NotFound", f"inferenceservices {key} not found")
        current = self.server.objects[key]
        if method == "GET":
            return self.reply(200, current)
        if self.headers.get("Content-Type") != "application/merge-patch+json":
            return self._status(415, "UnsupportedMediaType", self.headers.get("Content-Type", ""))
        wanted = (body.get("metadata") or {}).get("resourceVersion")
        if wanted is not None and wanted != current["metadata"]["resourceVersion"]:
            return self._status(
                409, "Conflict", "the object has been modified; please apply your changes to the latest version"
            )
        updated = merge_patch(current, body)
        updated["metadata"]["resourceVersion"] = str(int(current["metadata"]["resourceVersion"]) + 1)
        self.server.objects[key] = updated
        self.reply(200, updated)
