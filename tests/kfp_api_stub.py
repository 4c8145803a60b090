"""A local HTTP server with only the Kubeflow Pipelines v2beta1 endpoints `ct submit` and
`ct schedule` call. No cluster can run here: this stands in for the remote KFP API, so the
real `kfp.Client` is tested against real HTTP, and every request is recorded."""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


class KfpApiStub(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[tuple[str, str, dict, bytes]] = []
        self.pipelines: dict[str, dict] = {}
        self.versions: dict[str, list[dict]] = {}
        self.experiments: list[dict] = []
        self.runs: list[dict] = []
        self.recurring_runs: list[dict] = []
        self.fail: dict[str, tuple[int, float]] = {}  # path prefix -> (status, delay seconds)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def calls(self, method: str, path: str) -> list[tuple[dict, bytes]]:
        """The query and body of every request made to exactly this method and path."""
        return [(q, b) for m, p, q, b in self.requests if m == method and p == path]


def _named(items: list[dict], query: dict) -> list[dict]:
    """Applies a filter of `display_name EQUALS x`, the only one the client sends here."""
    if "filter" not in query:
        return items
    predicates = json.loads(query["filter"][0]).get("predicates", [])
    wanted = [p.get("string_value") or p.get("stringValue") for p in predicates if p.get("key") in ("display_name", "name")]
    return [i for i in items if not wanted or i["display_name"] == wanted[0]]


class _Handler(BaseHTTPRequestHandler):
    server: KfpApiStub

    def _reply(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self, method: str) -> None:
        url = urlparse(self.path)
        query = parse_qs(url.query)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.requests.append((method, url.path, query, body))
        for prefix, (status, delay) in self.server.fail.items():
            if url.path.startswith(prefix):
                time.sleep(delay)
                self._reply(status, {"error_message": f"stub failure {status}", "code": status})
                return
        s = self.server
        path = url.path
        if method == "GET" and path == "/apis/v2beta1/healthz":
            return self._reply(200, {"multi_user": False})
        if method == "GET" and path == "/apis/v2beta1/pipelines":
            return self._reply(200, {"pipelines": _named(list(s.pipelines.values()), query)})
        if method == "POST" and path == "/apis/v2beta1/pipelines/upload":
            pipeline = {"pipeline_id": uuid.uuid4().hex, "display_name": query["name"][0]}
            s.pipelines[pipeline["pipeline_id"]] = pipeline
            s.versions[pipeline["pipeline_id"]] = [{"pipeline_id": pipeline["pipeline_id"], "display_name": query["name"][0],
                                                    "pipeline_version_id": uuid.uuid4().hex}]
            return self._reply(200, pipeline)
        match = re.fullmatch(r"/apis/v2beta1/pipelines/(\w+)/versions", path)
        if method == "GET" and match:
            if match[1] not in s.versions:
                return self._reply(404, {"error_message": "pipeline not found", "code": 5})
            return self._reply(200, {"pipeline_versions": s.versions[match[1]]})
        if method == "POST" and path == "/apis/v2beta1/pipelines/upload_version":
            version = {"pipeline_id": query["pipelineid"][0], "display_name": query["name"][0],
                       "pipeline_version_id": uuid.uuid4().hex}
            s.versions[version["pipeline_id"]].append(version)
            return self._reply(200, version)
        if method == "GET" and path == "/apis/v2beta1/experiments":
            return self._reply(200, {"experiments": _named(s.experiments, query)})
        if method == "POST" and path == "/apis/v2beta1/experiments":
            experiment = {**json.loads(body), "experiment_id": uuid.uuid4().hex}
            s.experiments.append(experiment)
            return self._reply(200, experiment)
        if method == "POST" and path == "/apis/v2beta1/runs":
            run = {**json.loads(body), "run_id": uuid.uuid4().hex, "state": "RUNNING"}
            s.runs.append(run)
            return self._reply(200, run)
        match = re.fullmatch(r"/apis/v2beta1/runs/(\w+)", path)
        if method == "GET" and match:
            found = [r for r in s.runs if r["run_id"] == match[1]]
            return self._reply(200, found[0]) if found else self._reply(404, {"error_message": "run not found", "code": 5})
        if method == "GET" and path == "/apis/v2beta1/recurringruns":
            wanted = query.get("experiment_id", [None])[0]
            return self._reply(200, {"recurringRuns": [r for r in s.recurring_runs if r.get("experiment_id") == wanted]})
        if method == "POST" and path == "/apis/v2beta1/recurringruns":
            recurring = {**json.loads(body), "recurring_run_id": uuid.uuid4().hex}
            s.recurring_runs.append(recurring)
            return self._reply(200, recurring)
        self._reply(404, {"error_message": f"the stub does not implement {method} {path}", "code": 12})

    def do_GET(self) -> None:  # noqa: N802
        self._handle("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")

    def log_message(self, format, *args) -> None:  # noqa: A002
        pass
