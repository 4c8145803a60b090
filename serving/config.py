"""The prediction service's settings, checked when they are made."""

from __future__ import annotations

import dataclasses

from components.common.errors import ConfigError
from serving.batching import MAX_ROWS, MAX_WAIT_SECONDS
from serving.canary.judge import SequentialTest

MODEL_VERSION_ENV = "CT_MODEL_VERSION"  # pins `ct serve` to one model version (a KServe revision)
LISTEN_BACKLOG = 1024  # a burst of connections waits in the kernel, not refused
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@dataclasses.dataclass(frozen=True)
class ServingConfig:
    """How the prediction service routes, judges canaries, logs and protects itself.

    Attributes:
        canary_percent: Share of traffic (by request key) a new version gets while it is the canary.
        canary_test: The sequential test that promotes or rolls back a canary on online AUC
            (serving/canary/judge.py).
        canary_max_error_rate: Share of failed predictions above which the canary is rolled back at once.
        canary_check_seconds: How often the canary test looks at the evidence (for replicas sharing a
            home: reads the shared logs).
        poll_seconds: How often the model repository is checked for new versions; the canary
            check and the log writes fall due on these checks (so run no more often).
        request_log_sample: Share of predictions written to the request log (0 turns it off).
        request_log_rotate_rows: Rows per request-log Parquet file.
        request_log_flush_seconds: How often the request and feedback logs are written out (the
            drift trigger and other replicas see a prediction at most this much later).
        request_log_max_bytes: Size of the request log beyond which the oldest files are deleted.
        max_body_bytes: Largest request body accepted (a 100-row request is about 30 KB).
        max_string_chars: Longest string accepted in a feature value, a v2 request id or a request key.
        max_concurrent_requests: Requests parsed and scored at once; more wait for a slot.
        max_batch_rows: Most rows of concurrent requests scored in one model call (dynamic batching).
        batch_wait_seconds: How long a batch waits for more requests while requests are arriving
            together (a request after a batch of one never waits).
        queue_seconds: How long a request waits for a slot before a 503 with Retry-After.
        max_connections: Open client connections; more are answered 503 and closed.
        idle_seconds: A connection silent this long (between or within requests) is closed.
        canary_addressable: Whether clients may address the canary by version or label
            (off: only the routing sends traffic there, so clients cannot choose what is judged).
        journal_size: Predictions remembered for feedback (oldest forgotten first).
        pinned_version: Serve this version only, with no canary of our own (a KServe
            revision; KServe splits traffic between revisions). None: follow the repository.
    """

    canary_percent: int = 20
    canary_test: SequentialTest = SequentialTest()
    canary_max_error_rate: float = 0.01
    canary_check_seconds: float = 5.0
    poll_seconds: float = 0.5
    request_log_sample: float = 1.0
    request_log_rotate_rows: int = 20_000
    request_log_flush_seconds: float = 5.0
    request_log_max_bytes: int = 256 * 1024 * 1024
    max_body_bytes: int = 1024 * 1024
    max_string_chars: int = 256
    max_concurrent_requests: int = 8
    max_batch_rows: int = MAX_ROWS
    batch_wait_seconds: float = MAX_WAIT_SECONDS
    queue_seconds: float = 2.0
    max_connections: int = 256
    idle_seconds: float = 30.0
    canary_addressable: bool = False
    journal_size: int = 200_000
    pinned_version: int | None = None

    def __post_init__(self):
        if not 0 <= self.canary_percent <= 100:
            raise ConfigError(f"canary_percent={self.canary_percent}: expected 0..100")
        if not 0 <= self.request_log_sample <= 1:
            raise ConfigError(f"request_log_sample={self.request_log_sample}: expected 0..1")
        for name in (
            "request_log_rotate_rows",
            "request_log_max_bytes",
            "max_body_bytes",
            "max_string_chars",
            "max_concurrent_requests",
            "max_batch_rows",
            "max_connections",
            "journal_size",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)}: must be at least 1")
        for name in ("canary_check_seconds", "batch_wait_seconds"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}={getattr(self, name)}: must not be negative")
        for name in ("poll_seconds", "queue_seconds", "idle_seconds", "request_log_flush_seconds"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name}={getattr(self, name)}: must be positive")


@dataclasses.dataclass(frozen=True)
class KServeRollout:
    """Serving on KServe: each pushed version is deployed to the InferenceService as a
    canary (serving/canary/kserve.py) and, after `bake_seconds`, rolled back if not Ready, else
    promoted or rolled back on online AUC as the in-process canary is (ServingConfig), from
    the shared request and feedback logs, checked every `check_seconds`, with the same
    sequential test (`canary_test`)."""

    namespace: str = "ct"
    name: str = "ct-predictor"
    canary_percent: int = 10
    bake_seconds: float = 600.0
    check_seconds: float = 60.0
    canary_test: SequentialTest = SequentialTest()
