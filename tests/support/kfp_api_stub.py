"""A local HTTP server with only the Kubeflow Pipelines v2beta1 endpoints `ct submit` and
`ct schedule` call. No cluster can run here: this stands in for the remote KFP API, so the
real `kfp.Client` is tested against real HTTP, and every request is recorded."""

from __future__ import annotations

import json
import re
import time
import uuid
from urllib.parse import parse_qs, urlparse

from tests.support.api_stub import ApiStub, JsonHandler


class KfpApiStub(ApiStub):
    def __init__(self):
        super().__init__(_Handler)
        self.requests: list[tuple[str, str, dict, bytes]] = []
        self.authorizations: list[str | None] = []  # each request's Authorization header
        self.pipelines: dict[str, dict] = {}
        self.versions: dict[str, list[dict]] = {}
        self.experiments: list[dict] = []
        self.runs: list[dict] = []
        self.recurring_runs: list[dict] = []
        self.fail: dict[str, tuple[int, float]] = {}  # path prefix -> (status, delay seconds)

    def calls(self, method: str, path: str) -> list[tuple[dict, bytes]]:
        """The query and body of every request made to exactly this method and path."""
        return [(q, b) for m, p, q, b in self.requests if m == method and p == path]


def _named(items: list[dict], query: dict) -> list[dict]:
    """Applies a filter of `display_name EQUALS x`, the only one the client sends here."""
    if "filter" not in query:
        return items
    predicates = json.loads(query["filter"][0]).get("predicates", [])
    wanted = [
        p.get("string_value") or p.get("stringValue") for p in predicates if p.get("key") in ("display_name", "name")
    ]
    return [i for i in items if not wanted or i["display_name"] == wanted[0]]


class _Handler(JsonHandler):
    server: KfpApiStub

    def handle_method(self, method: str) -> None:
        url = urlparse(self.path)
        query = parse_qs(url.query)
        body = self.body()
        self.server.requests.append((method, url.path, query, body))
        self.server.authorizations.append(self.headers.get("Authorization"))
        for prefix, (status, delay) in self.server.fail.items():
            if url.path.startswith(prefix):
                time.sleep(delay)
                self.reply(status, {"error_message": f"stub failure {status}", "code": status})
                return
        s = self.server
        path = url.path
        if method == "GET" and path == "/apis/v2beta1/healthz":
            return self.reply(200, {"multi_user": False})
        if method == "GET" and path == "/apis/v2beta1/pipelines":
            return self.reply(200, {"pipelines": _named(list(s.pipelines.values()), query)})
        if method == "POST" and path == "/apis/v2beta1/pipelines/upload":
            pipeline = {"pipeline_id": uuid.uuid4().hex, "display_name": query["name"][0]}
            s.pipelines[pipeline["pipeline_id"]] = pipeline
            s.versions[pipeline["pipeline_id"]] = [
                {
                    "pipeline_id": pipeline["pipeline_id"],
                    "display_name": query["name"][0],
                    "pipeline_version_id": uuid.uuid4().hex,
                }
            ]
            return self.reply(200, pipeline)
        match = re.fullmatch(r"/apis/v2beta1/pipelines/(\w+)/versions", path)
        if method == "GET" and match:
            if match[1] not in s.versions:
                return self.reply(404, {"error_message": "pipeline not found", "code": 5})
            return self.reply(200, {"pipeline_versions": s.versions[match[1]]})
        if method == "POST" and path == "/apis/v2beta1/pipelines/upload_version":
            version = {
                "pipeline_id": query["pipelineid"][0],
                "display_name": query["name"][0],
                "pipeline_version_id": uuid.uuid4().hex,
            }
            s.versions[version["pipeline_id"]].append(version)
            return self.reply(200, version)
        if method == "GET" and path == "/apis/v2beta1/experiments":
            return self.reply(200, {"experiments": _named(s.experiments, query)})
        if method == "POST" and path == "/apis/v2beta1/experiments":
            experiment = {**json.loads(body), "experiment_id": uuid.uuid4().hex}
            s.experiments.append(experiment)
            return self.reply(200, experiment)
        if method == "POST" and path == "/apis/v2beta1/runs":
            run = {**json.loads(body), "run_id": uuid.uuid4().hex, "state": "RUNNING"}
            s.runs.append(run)
            return self.reply(200, run)
        match = re.fullmatch(r"/apis/v2beta1/runs/(\w+)", path)
        if method == "GET" and match:
            found = [r for r in s.runs if r["run_id"] == match[1]]
            return (
                self.reply(200, found[0]) if found else self.reply(404, {"error_message": "run not found", "code": 5})
            )
        if method == "GET" and path == "/apis/v2beta1/recurringruns":
            wanted = query.get("experiment_id", [None])[0]
            return self.reply(200, {"recurringRuns": [r for r in s.recurring_runs if r.get("experiment_id") == wanted]})
        if method == "POST" and path == "/apis/v2beta1/recurringruns":
            recurring = {**json.loads(body), "recurring_run_id": uuid.uuid4().hex}
            s.recurring_runs.append(recurring)
            return self.reply(200, recurring)
        self.reply(404, {"error_message": f"the stub does not implement {method} {path}", "code": 12})
