"""`ct serve`: the prediction service over a home's model repository (HTTP, and gRPC on a
second port), until interrupted or terminated; on SIGTERM (a pod stopping) it stops
accepting, lets the requests in flight finish, and writes the buffered request and feedback
logs before it exits."""

from __future__ import annotations

import gc
import logging
import resource
import signal
import sys
import threading

from components.common.datasets import load_dataset
from components.common.home import Home
from components.common.metadata import MetadataStore
from serving.config import LOG_FORMAT, ServingConfig
from serving.credentials import serving_token
from serving.grpc_server import GrpcServer
from serving.metrics import MetricsPeers
from serving.request_log import ParquetLog, RequestLog
from serving.server import PredictionServer
from serving.service import PredictionService
from serving.workers import WorkerSeat

DRAIN_SECONDS = 10.0  # within Kubernetes' default 30 s grace period
# Request threads wait for the GIL at most this long behind background work (a log write, a
# model load) before it is handed over: Python's default of 5 ms, paid at each of a request's
# dozen hand-overs, tripled the p99 while the request log was being written.
SWITCH_INTERVAL_SECONDS = 0.0005

log = logging.getLogger(__name__)


def serve(
    home: Home,
    dataset_name: str,
    config: ServingConfig,
    host: str,
    port: int,
    token: str = "",
    grpc_port: int = 0,
    worker: WorkerSeat | None = None,
) -> None:
    """Serves the dataset's model from `home` at host:port; says where once it listens.

    Args:
        token: The serving token (from a Kubernetes Secret); empty: the one kept in the home,
            made on first use (serving/credentials.py).
        grpc_port: Also serve gRPC (TF Serving's and the Open Inference Protocol's services,
            serving/grpc_server.py) on host:grpc_port; 0: no gRPC.
        worker: As one of several workers (serving/workers.py): its number, the listening
            socket they share, and their metrics folder.

    The process's garbage collector and GIL hand-over are tuned for serving (below, and
    README, "Garbage collection"): `serve` is the whole process's work, not a library call.
    """
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    home.create()
    dataset = load_dataset(dataset_name)
    serving = serving_token(home.serving_token, token)
    request_log = RequestLog(
        home.request_log, config.request_log_sample, config.request_log_rotate_rows, config.request_log_max_bytes
    )
    feedback_log = ParquetLog(home.feedback_log, config.request_log_rotate_rows, config.request_log_max_bytes)
    service = PredictionService(
        home.model_repository,
        dataset.model_name,
        config,
        request_log,
        MetadataStore(home.metadata_connection),
        feature_repo=home.feature_repo if dataset.feature_store else None,
        feedback_log=feedback_log,
        verdicts=home.canary_verdicts,
        token=serving,
        peers=MetricsPeers(worker.metrics, worker.name) if worker else None,
    )
    _allow_open_files(config.max_connections + 256)
    server = PredictionServer(
        (host, port),
        service,
        listening=worker.listening if worker else None,
        peers=worker.connections if worker else None,
    )
    grpc_server = GrpcServer(host, grpc_port, service, shared=worker is not None) if grpc_port else None
    # What start-up imported and built lives as long as the process. Out of the cyclic
    # collector's sight, a full collection no longer walks it: 330,000 of the 400,000 objects
    # a full collection walked in 214 ms, every request waiting. Models loaded from now on
    # stay collectable. Young collections come every 50,000 allocations, not 700: each one
    # moved the objects of the requests in flight a generation up, and their pile set off a
    # full collection of the models' objects (60-75 ms) every few seconds at 600 requests/s.
    gc.collect()  # start-up's own garbage is not frozen with it
    gc.freeze()
    gc.set_threshold(50_000, 20, 10)
    service.start()
    if grpc_server is not None:
        grpc_server.start()
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    print(
        f"serving {dataset.model_name} from {home.model_repository} at {server.url} "
        f"{f'and gRPC {grpc_server.address} ' if grpc_server else ''}"
        f"(versions: {[m.version for m in service.registry.routing.models] or 'none yet'}; "
        f"feedback token {'from the environment' if token else 'in ' + str(home.serving_token)})"
        f"{f'; worker {worker.number}' if worker else ''}",
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        # gRPC refuses new calls at once and lets those in flight finish, beside the HTTP drain.
        grpc_stopped = grpc_server.stop(DRAIN_SECONDS) if grpc_server is not None else None
        if not server.drain(DRAIN_SECONDS):
            log.warning("requests still in flight after %.0f s; stopping anyway", DRAIN_SECONDS)
        if grpc_stopped is not None:
            grpc_stopped.wait()
        service.stop()
        log.info("stopped; logs written to %s and %s", home.request_log, home.feedback_log)


def _allow_open_files(wanted: int) -> None:
    """Raises the soft open-file limit toward `wanted` (up to the hard limit), so that the
    connection limit, not the file limit, is what turns clients away."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
