"""The prediction service's behaviour, independent of HTTP: predict, infer, feedback, status.

Errors a client caused raise `ServiceError` with a 4xx status and a message that names
the problem; the HTTP layer turns them into JSON error bodies.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from components.common import model_io
from components.common.metadata import MetadataStore
from components.common.model_repository import content_digest
from features.requests import RequestFeatures
from serving.canary.in_process import InProcessCanary, SharedLogs
from serving.canary.verdicts import VerdictBook
from serving.config import ServingConfig
from serving.credentials import ServingToken
from serving.metrics import Metrics, MetricsPeers, exposition, summed
from serving.registry import CANARY, SERVABLE, STABLE, Batching, LoadedModel, ModelRegistry, Vetting
from serving.request_log import ParquetLog, RequestLog

log = logging.getLogger(__name__)

V2_DATATYPES = {"string": "BYTES", "int64": "INT64", "float32": "FP32"}
TF_DATATYPES = {"string": "DT_STRING", "int64": "DT_INT64", "float32": "DT_FLOAT"}
FEEDBACK_NEEDS_TOKEN = "feedback needs the serving token (Authorization: Bearer <token>)"


class ServiceError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class PredictionService:
    """Serves one model name from the model repository."""

    def __init__(
        self,
        repository: Path,
        model_name: str,
        config: ServingConfig,
        request_log: RequestLog,
        store: MetadataStore | None = None,
        feature_repo: Path | None = None,
        feedback_log: ParquetLog | None = None,
        verdicts: Path | None = None,
        token: ServingToken | None = None,
        peers: MetricsPeers | None = None,
    ):
        """With `feedback_log` and `verdicts` (folders on a volume other replicas share), the
        canary is judged once for all replicas, from all their logs (serving/canary/).

        With `peers` (workers serving the same port, serving/workers.py), this service's metrics
        are published there at every tick and scrape, and its /metrics are every worker's summed.

        With a `store`, only versions whose push it recorded, with the digest they have on
        disk, are served. With a `token`, feedback needs it, request ids are signed and
        feedback is taken only for ids this deployment issued (serving/credentials.py);
        without one (tests, benchmarks), anyone may send feedback.
        """
        self.model_name = model_name
        self.store = store
        self.token = token
        self.feedback_log = feedback_log
        self.features = RequestFeatures(feature_repo) if feature_repo else None
        self.config = config
        self.request_log = request_log
        self.metrics = Metrics(self.model_name)
        self.peers = peers
        shared = (
            SharedLogs(request_log.folder, feedback_log.folder, VerdictBook(verdicts, model_name))
            if feedback_log is not None and verdicts is not None
            else None
        )
        self.canary = InProcessCanary(model_name, config, self.metrics, store, shared)
        self.registry = ModelRegistry(
            repository,
            model_name,
            config.canary_percent,
            excluded=(lambda: store.rolled_back_versions(model_name)) if store else set,
            on_loaded=lambda model, role: self.canary.loaded(self.registry, model, role),
            pinned_version=config.pinned_version,
            settled=shared.verdicts.promoted if shared else (lambda version: True),
            vet=self._vet if store else (lambda version, path: SERVABLE),
            bucket=token.bucket if token else None,
            batching=Batching(config.max_batch_rows, config.batch_wait_seconds),
        )
        self._answered = OnceEach(config.journal_size)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_flush = time.monotonic()

    def _vet(self, version: int, path: Path) -> Vetting:
        """Served only when ML Metadata recorded its push, with the content it has on disk."""
        recorded = self.store.pushed_digest(self.model_name, version)
        if recorded is None:
            return Vetting(pending=True)  # published, its push not recorded (yet, or ever: a crashed run)
        if not recorded:
            log.warning("model %s version %s was pushed without a digest: served unchecked", self.model_name, version)
            return SERVABLE
        found = content_digest(path)
        if found != recorded:
            return Vetting(f"its content (digest {found[:12]}) is not what was pushed (digest {recorded[:12]})")
        return SERVABLE

    @property
    def online_features(self):
        """The online store's lookups (their missing and stale counts), or None without a feature store."""
        return self.features.online if self.features is not None else None

    # --- background work: new versions, canary verdicts, request-log flushes ------

    def start(self) -> None:
        self.tick()
        self._thread = threading.Thread(target=self._loop, name="model-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
        self._flush_logs()
        self._publish_metrics()

    def _loop(self) -> None:
        while not self._stop.wait(self.config.poll_seconds):
            try:
                self.tick()
            except Exception:  # the watcher must outlive any one bad tick
                log.exception("model watcher tick failed")

    def tick(self) -> None:
        failed_before = len(self.registry.failed)
        self.registry.refresh()
        for _ in range(len(self.registry.failed) - failed_before):
            self.metrics.load_failed()
        self.canary.judge(self.registry)
        if self.features is not None:
            self.features.refresh()
        if time.monotonic() - self._last_flush > self.config.request_log_flush_seconds:
            self._last_flush = time.monotonic()
            self._flush_logs()
        self._publish_metrics()

    def _flush_logs(self) -> None:
        for _, parquet_log in self.logs:
            parquet_log.flush()

    def _publish_metrics(self) -> None:
        if self.peers is not None:
            self.peers.publish(self.metrics.series(self.online_features, self.logs))

    # --- requests ----------------------------------------------------------------

    def _check_name(self, name: str) -> None:
        if name != self.model_name:
            raise ServiceError(404, f"model '{name}' is not served here (serving '{self.model_name}')")

    def _model(
        self, name: str, version: int | None, label: str | None, request_key: str, scoring: bool = False
    ) -> LoadedModel:
        """The model a request names or is routed to; `scoring` requests may not choose the canary
        unless `canary_addressable` (its verdict must rest on the traffic the routing sent it)."""
        self._check_name(name)
        routing = self.registry.routing
        if version is not None:
            model = routing.by_version(version)
            if model is None:
                raise ServiceError(
                    404,
                    f"model '{name}' version {version} is not being served "
                    f"(serving {[m.version for m in routing.models]})",
                )
        elif label is not None:
            if label not in (STABLE, CANARY):
                raise ServiceError(400, f"unknown label '{label}' (expected {STABLE} or {CANARY})")
            model = routing.by_label(label)
            if model is None:
                raise ServiceError(404, f"model '{name}' has no {label} version now")
        else:
            model = None
        if model is not None:
            if scoring and model is routing.canary and not self.config.canary_addressable:
                raise ServiceError(
                    403, f"model '{name}' version {model.version} is the canary: clients cannot address it here"
                )
            return model
        if len(request_key) > self.config.max_string_chars:
            raise ServiceError(
                400, f"request key of {len(request_key)} characters: at most {self.config.max_string_chars}"
            )
        model = routing.choose(request_key)
        if model is None:
            raise ServiceError(503, f"model '{name}' has no version loaded yet")
        return model

    def _with_features(self, given):
        """Rows or columns with their online features added, when the client sent entities only."""
        if self.features is None:
            return given
        return self.features.add_to_instances(given) if isinstance(given, list) else self.features.add_to_columns(given)

    def predict(
        self, name: str, body: Any, version: int | None = None, label: str | None = None, request_key: str | None = None
    ) -> dict[str, Any]:
        """TF Serving REST predict: `{"instances": [...]}` (rows) or `{"inputs": {...}}` (columns)."""
        if not isinstance(body, dict) or ("instances" in body) == ("inputs" in body):
            raise ServiceError(400, 'the body must be a JSON object with either "instances" or "inputs"')
        request_id = uuid.uuid4().hex[:16]
        model = self._model(name, version, label, request_key or request_id, scoring=True)
        started = time.perf_counter()
        try:
            if "instances" in body:
                if not isinstance(body["instances"], list) or not all(isinstance(r, dict) for r in body["instances"]):
                    raise model_io.RequestError('"instances" must be a list of objects (feature name -> value)')
                columns = model_io.instances_to_columns(model.signature, self._with_features(body["instances"]))
            else:
                if not isinstance(body["inputs"], dict):
                    raise model_io.RequestError('"inputs" must be an object (feature name -> list of values)')
                columns = model_io.inputs_to_columns(model.signature, self._with_features(body["inputs"]))
        except model_io.RequestError as error:
            self.metrics.error(str(model.version), 400)
            raise ServiceError(400, str(error)) from None
        scores, request_ids = self._answer(model, columns, request_id, "tfserving", started)
        key = "predictions" if "instances" in body else "outputs"
        return {key: scores, "model_version": str(model.version), "request_ids": request_ids}

    def infer(self, name: str, body: Any, version: int | None = None, request_key: str | None = None) -> dict[str, Any]:
        """Open Inference Protocol v2 infer: `{"inputs": [{"name", "shape", "datatype", "data"}, ...]}`."""
        if not isinstance(body, dict) or not isinstance(body.get("inputs"), list) or not body["inputs"]:
            raise ServiceError(400, 'the body must be a JSON object with a non-empty "inputs" list')
        request_id = body.get("id") or uuid.uuid4().hex[:16]
        if not isinstance(request_id, str) or len(request_id) > self.config.max_string_chars:
            raise ServiceError(400, f'"id" must be a string of at most {self.config.max_string_chars} characters')
        model = self._model(name, version, None, request_key or request_id, scoring=True)
        started = time.perf_counter()
        try:
            inputs = {}
            for tensor in body["inputs"]:
                if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str) or "data" not in tensor:
                    raise model_io.RequestError('each input needs "name" (a string) and "data"')
                expected = V2_DATATYPES.get(model.signature.inputs.get(tensor["name"], ""))
                if expected and tensor.get("datatype", expected) != expected:
                    raise model_io.RequestError(
                        f"feature '{tensor['name']}': datatype {tensor['datatype']}, expected {expected}"
                    )
                inputs[tensor["name"]] = tensor["data"]
            columns = model_io.inputs_to_columns(model.signature, self._with_features(inputs))
        except model_io.RequestError as error:
            self.metrics.error(str(model.version), 400)
            raise ServiceError(400, str(error)) from None
        scores, request_ids = self._answer(model, columns, request_id, "v2", started)
        return {
            "model_name": self.model_name,
            "model_version": str(model.version),
            "id": request_id,
            "outputs": [{"name": model_io.OUTPUT, "shape": [len(scores)], "datatype": "FP32", "data": scores}],
            "parameters": {"request_ids": request_ids},
        }

    def _answer(
        self, model: LoadedModel, columns, request_id: str, api: str, started: float
    ) -> tuple[list[float], list[str]]:
        """Scores the rows, and remembers, counts and logs the answer; one request id per row (signed
        with the serving token, so feedback can be taken for ids issued here only)."""
        self._check_strings(model, columns)
        scores = self._score(model, columns)
        sign = self.token.sign if self.token else str
        request_ids = [sign(f"{request_id}-{i}") for i in range(len(scores))]
        self.canary.journal.predicted(model.version, request_ids, scores)
        self.metrics.observe(str(model.version), api, (time.perf_counter() - started) * 1000)
        self.request_log.append(columns, scores, model.version, request_ids)
        return scores, request_ids

    def _check_strings(self, model: LoadedModel, columns) -> None:
        limit = self.config.max_string_chars
        for name, dtype in model.signature.inputs.items():
            if dtype == "string":
                longest = max(map(len, columns[name]), default=0)
                if longest > limit:
                    self.metrics.error(str(model.version), 400)
                    raise ServiceError(400, f"feature '{name}': a value of {longest} characters (at most {limit})")

    def _score(self, model: LoadedModel, columns) -> list[float]:
        try:
            return [float(s) for s in model.predict(columns)]
        except Exception as error:  # the model itself failed on valid input: count it against the version
            self.canary.journal.failed(model.version)
            self.metrics.error(str(model.version), 500)
            log.exception("model %s version %s failed to predict", self.model_name, model.version)
            raise ServiceError(
                500, f"model version {model.version} failed to predict: {type(error).__name__}"
            ) from None

    def may_send_feedback(self, authorization: str | None) -> bool:
        return self.token is None or self.token.authorizes(authorization)

    def feedback(self, name: str, body: Any, authorization: str | None = None) -> dict[str, Any]:
        """True outcomes: `{"feedback": [{"request_id": "...", "label": 0 or 1}, ...]}`.

        Taken from holders of the serving token only, for ids this deployment issued, once
        per id: anything else is listed as rejected and neither judged nor logged. Ids issued
        by another replica are logged for the shared judge though this one never saw them.
        """
        self._check_name(name)
        if not self.may_send_feedback(authorization):
            raise ServiceError(401, FEEDBACK_NEEDS_TOKEN)
        items = body.get("feedback") if isinstance(body, dict) else None
        if not isinstance(items, list) or not items:
            raise ServiceError(400, 'the body must be a JSON object with a non-empty "feedback" list')
        for index, item in enumerate(items):
            if (
                not isinstance(item, dict)
                or not isinstance(item.get("request_id"), str)
                or item.get("label") not in (0, 1)
            ):
                raise ServiceError(
                    400, f'feedback {index}: expected {{"request_id": "<id>", "label": 0 or 1}}, got {item!r}'
                )
        if self.feedback_log is not None and self.feedback_log.failing:
            raise ServiceError(503, f"feedback cannot be kept now: {self.feedback_log.failing}")
        taken, rejected = [], []
        for item in items:
            request_id = item["request_id"]
            fresh = self.token is None or (self.token.issued(request_id) and self._answered.first(request_id))
            (taken if fresh else rejected).append(item)
        unknown = [
            item["request_id"]
            for item in taken
            if self.canary.journal.feedback(item["request_id"], int(item["label"])) is None
        ]
        answer = {
            "accepted": len(taken) - len(unknown),
            "unknown": unknown,
            "rejected": [i["request_id"] for i in rejected],
        }
        if self.feedback_log is None:
            return answer
        # Kept for a judge outside this process (KServe: the prediction may have come from another revision's pod).
        self.feedback_log.add([{"request_id": item["request_id"], "label": int(item["label"])} for item in taken])
        return {**answer, "logged": len(taken)}

    def performance(self, name: str, last: int) -> dict[str, Any]:
        """Online metrics of the stable (and canary) version over their last `last` labelled
        predictions (every replica's, when replicas share the home)."""
        self._check_name(name)
        routing = self.registry.routing
        both = ((STABLE, routing.stable), (CANARY, routing.canary))
        models = {label: model for label, model in both if model is not None}
        recent = self.canary.recent(list(models.values()), last)
        return {label: _finite(recent[model.version].summary()) for label, model in models.items()}

    # --- status and metadata -------------------------------------------------------

    def status(self, name: str, version: int | None = None, label: str | None = None) -> dict[str, Any]:
        """TF Serving model status: served versions AVAILABLE, failed ones END with their error."""
        if version is not None or label is not None:
            models = [self._model(name, version, label, "")]
            failed = {}
        else:
            self._check_name(name)
            models = self.registry.routing.models
            failed = self.registry.failed
        routing = self.registry.routing
        statuses = [
            {
                "version": str(m.version),
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
                "label": STABLE if m is routing.stable else CANARY,
            }
            for m in models
        ]
        statuses += [
            {"version": str(v), "state": "END", "status": {"error_code": "UNKNOWN", "error_message": error}}
            for v, error in sorted(failed.items())
        ]
        return {"model_version_status": statuses}

    def metadata(self, name: str, version: int | None = None, label: str | None = None) -> dict[str, Any]:
        """TF Serving model metadata: the serving signature."""
        model = self._model(name, version, label or (None if version is not None else STABLE), "")
        tensor = lambda dtype, n: {"dtype": dtype, "tensor_shape": {"dim": [{"size": "-1"}]}, "name": n}  # noqa: E731
        signature = {
            "inputs": {n: tensor(TF_DATATYPES[d], n) for n, d in model.signature.inputs.items()},
            "outputs": {o: tensor("DT_FLOAT", o) for o in model.signature.outputs},
            "method_name": "tensorflow/serving/predict",
        }
        return {
            "model_spec": {"name": name, "signature_name": "", "version": str(model.version)},
            "metadata": {"signature_def": {"signature_def": {model_io.SIGNATURE: signature}}},
        }

    def v2_model(self, name: str, version: int | None = None) -> dict[str, Any]:
        model = self._model(name, version, None if version is not None else STABLE, "")
        return {
            "name": name,
            "versions": [str(m.version) for m in self.registry.routing.models],
            "platform": "tensorflow_savedmodel",
            "inputs": [
                {"name": n, "datatype": V2_DATATYPES[d], "shape": [-1]} for n, d in model.signature.inputs.items()
            ],
            "outputs": [{"name": o, "datatype": "FP32", "shape": [-1]} for o in model.signature.outputs],
        }

    @property
    def logs(self) -> list[tuple[str, ParquetLog]]:
        return [("request", self.request_log)] + ([("feedback", self.feedback_log)] if self.feedback_log else [])

    def render_metrics(self) -> str:
        if self.peers is None:
            return self.metrics.render(self.online_features, self.logs)
        self._publish_metrics()  # its own first: every worker's file, and so every sum, only grows
        return exposition(summed(self.peers.every_workers()))

    def health(self) -> dict[str, Any]:
        """Readiness, and what is failing while the service still answers (e.g. a log it cannot write)."""
        failing = {f"{name} log": log.failing for name, log in self.logs if log.failing}
        return {"ready": self.ready(), **({"failing": failing} if failing else {})}

    def ready(self, name: str | None = None, version: int | None = None) -> bool:
        if name is None:
            return self.registry.routing.stable is not None
        try:
            self._model(name, version, None if version is not None else STABLE, "")
            return True
        except ServiceError:
            return False


class OnceEach:
    """Remembers the last `capacity` ids seen; `first(id)` is True only the first time."""

    def __init__(self, capacity: int):
        self._capacity = capacity
        self._seen: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._lock = threading.Lock()

    def first(self, key: str) -> bool:
        with self._lock:
            if key in self._seen:
                return False
            self._seen[key] = None
            if len(self._seen) > self._capacity:
                self._seen.popitem(last=False)
            return True


def _finite(summary: dict[str, float]) -> dict[str, float | None]:
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in summary.items()}
