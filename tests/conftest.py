"""Shared fixtures: small slices of the real bundled data, written as spans, and one trained model."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Iterator

import pandas as pd
import pytest

from components.common.datasets import load_dataset
from components.common.metadata import MetadataStore
from components.common.model_io import frame_to_instances
from pipelines.demo.sample_data import flight_spans
from serving.config import ServingConfig
from serving.request_log import RequestLog
from serving.server import PredictionServer
from serving.service import PredictionService
from tests.support.job_servers import FLINK, SPARK, job_server
from tests.support.kube import KubeApiServer, kube_api_server
from tests.support.serving_helpers import MODEL, TOKEN, publish
from tests.support.spans import feature_tables_folder, write_month

SAMPLE_ROWS = 3000


@pytest.fixture
def store(tmp_path):
    """An ML Metadata store on a temporary SQLite file."""
    return MetadataStore(f"sqlite:///{tmp_path / 'metadata.sqlite'}")


@pytest.fixture(scope="session")
def flights():
    return load_dataset("flights")


@pytest.fixture(scope="session")
def flight_months() -> dict[str, pd.DataFrame]:
    """The first rows of three real months of flights (every origin and most carriers appear)."""
    return {
        span.span_id: span.frame.sample(SAMPLE_ROWS, random_state=0).reset_index(drop=True)
        for span in flight_spans(["2013-01", "2013-02", "2013-07"])
    }


@pytest.fixture(scope="session")
def flight_examples(flight_months, flights) -> dict[str, pd.DataFrame]:
    """The same months as examples: joined with the feature store's tables as ingest joins them."""
    from components.ingest.logic import examples_with_features

    return {
        month: examples_with_features(frame, flights, feature_tables_folder(), month)[0]
        for month, frame in flight_months.items()
    }


@pytest.fixture(scope="session")
def feature_sources() -> Path:
    return feature_tables_folder()


@pytest.fixture(scope="session")
def feature_repo(tmp_path_factory) -> Path:
    """A Feast repository (SQLite online store) with January 2013's departures materialized."""
    import datetime as dt

    from features import store

    repo = tmp_path_factory.mktemp("feature_repo")
    store.apply(repo, feature_tables_folder())
    utc = dt.timezone.utc
    store.materialize(
        repo, feature_tables_folder(), dt.datetime(2013, 1, 1, 5, tzinfo=utc), dt.datetime(2013, 2, 1, 6, tzinfo=utc)
    )
    return repo


@pytest.fixture(scope="session")
def flink(tmp_path_factory) -> Iterator[str]:
    """A real Flink (Beam's job server over a Flink cluster in one JVM): its job endpoint."""
    with job_server(FLINK, tmp_path_factory.mktemp("flink") / "job-server.log") as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
def spark(tmp_path_factory) -> Iterator[str]:
    """A real Spark (Beam's job server over a local Spark master in one JVM): its job endpoint."""
    with job_server(SPARK, tmp_path_factory.mktemp("spark") / "job-server.log") as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
def kube(tmp_path_factory) -> Iterator[KubeApiServer]:
    """A real Kubernetes API server on loopback, with KServe's InferenceService kind (tests/support/kube.py)."""
    with kube_api_server(tmp_path_factory.mktemp("kube")) as server:
        yield server


@pytest.fixture
def data_root(tmp_path, flight_months) -> Path:
    root = tmp_path / "data"
    write_month(root, "2013-01", flight_months["2013-01"])
    return root


@pytest.fixture(scope="session")
def splits(tmp_path_factory, flight_months) -> tuple[Path, Path]:
    """Train and eval splits (folders of Parquet shards) of the January sample, by the hash split: eval rows drawn
    from the same days as training, as the tests of later stages assume (a model that learned
    something scores well above chance on them); ingest's own tests cover the time split."""
    from components.ingest.logic import HASH_SPLIT, ingest

    folder = tmp_path_factory.mktemp("splits")
    write_month(folder / "data", "2013-01", flight_months["2013-01"])
    train, eval_ = folder / "train", folder / "eval"
    ingest(folder / "data", 1, 20, "flight_id", train, eval_, load_dataset("flights"), eval_split=HASH_SPLIT)
    return train, eval_


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory, splits, flights) -> Path:
    """A real SavedModel trained on the January sample."""
    from components.train.logic import Hyperparameters, train

    folder = tmp_path_factory.mktemp("model")
    train(splits[0], flights, Hyperparameters(epochs=3), folder / "model", folder / "vocabularies.json")
    return folder / "model"


@pytest.fixture(scope="session")
def penguin_model(tmp_path_factory) -> Path:
    """A real model of another dataset: its signature differs from the flights model's."""
    from components.train.logic import Hyperparameters, train
    from pipelines.demo.sample_data import penguin_spans

    folder = tmp_path_factory.mktemp("penguins")
    pd.concat([s.frame for s in penguin_spans()]).to_parquet(folder / "train.parquet")
    train(
        folder / "train.parquet",
        load_dataset("penguins"),
        Hyperparameters(epochs=1),
        folder / "model",
        folder / "v.json",
    )
    return folder / "model"


@pytest.fixture
def rows(splits, flights):
    return frame_to_instances(pd.read_parquet(splits[1]).head(400), flights.features)


@pytest.fixture
def serve(tmp_path, trained_model):
    """Starts a server on a free loopback port with version 1 published; yields a factory."""
    started = []

    def start(config=None, feature_repo=None, feedback_log=None, verdicts=None):
        config = config or ServingConfig(poll_seconds=0.05, request_log_rotate_rows=50)
        store = MetadataStore(f"sqlite:///{tmp_path / 'metadata.sqlite'}")
        repository = tmp_path / "models"
        publish(repository, trained_model, 1, store)
        request_log = RequestLog(
            tmp_path / "request_log",
            config.request_log_sample,
            config.request_log_rotate_rows,
            config.request_log_max_bytes,
            seed=0,
        )
        service = PredictionService(
            repository, MODEL, config, request_log, store, feature_repo, feedback_log, verdicts=verdicts, token=TOKEN
        )
        server = PredictionServer(("127.0.0.1", 0), service)
        service.start()
        threading.Thread(target=server.serve_forever, daemon=True).start()
        started.append((server, service))
        return server, service, repository, store

    yield start
    for server, service in started:
        server.shutdown()
        server.server_close()
        service.stop()
