"""`ct serve`: the prediction service over a home's model repository, until interrupted."""

from __future__ import annotations

import logging

from components.common.datasets import load_dataset
from components.common.home import Home
from components.common.metadata import MetadataStore
from serving.config import ServingConfig
from serving.request_log import ParquetLog, RequestLog
from serving.server import PredictionServer
from serving.service import PredictionService


def serve(home: Home, dataset_name: str, config: ServingConfig, host: str, port: int) -> None:
    """Serves the dataset's model from `home` at host:port; says where once it listens."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    home.create()
    dataset = load_dataset(dataset_name)
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
    )
    server = PredictionServer((host, port), service)
    service.start()
    print(
        f"serving {dataset.model_name} from {home.model_repository} at {server.url} "
        f"(versions: {[m.version for m in service.registry.routing.models] or 'none yet'})",
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        service.stop()
