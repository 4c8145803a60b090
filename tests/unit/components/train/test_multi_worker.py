"""Training on two workers, each its own process on loopback, as the Training Operator runs a
TFJob's workers: TF_CONFIG names the cluster, MultiWorkerMirroredStrategy all-reduces gradients
over gRPC (real TensorFlow collectives, nothing stubbed)."""

import json
import socket
import subprocess
import sys

import numpy as np
import pandas as pd

from components.common import model_io
from components.common.auc_inference import auc_estimate

WORKER = """
import json, os, sys
from pathlib import Path
if sys.argv[1]:
    os.environ["TF_CONFIG"] = sys.argv[1]
from components.common.datasets import load_dataset
from components.train.logic import Hyperparameters, train
out = Path(sys.argv[3])
result = train(Path(sys.argv[2]), load_dataset("flights"), Hyperparameters(epochs=3), out / "model", out / "vocab.json")
print(json.dumps({"final_loss": result.final_loss, "rows": result.rows, "replicas": result.replicas}))
"""


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _start(tf_config: str, train_path, out) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, tf_config, str(train_path), str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _scores(model_dir, frame) -> np.ndarray:
    model = model_io.SavedModel(model_dir)
    return model.predict(model_io.frame_to_columns(model.signature, frame))


def _cluster(size: int) -> list[str]:
    workers = [f"127.0.0.1:{port}" for port in _free_ports(size)]
    return [json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}}) for i in range(size)]


def test_two_workers_train_the_model_one_worker_trains(tmp_path, splits):
    """Two workers end with the model of a cluster of one (the same loop, the same batches),
    and that loop optimizes what Keras's fit does in one process (its final loss within 2%)."""
    runs = [
        *zip(_cluster(2), [tmp_path / "chief", tmp_path / "worker-1"]),
        (_cluster(1)[0], tmp_path / "alone"),
        ("", tmp_path / "fit"),
    ]
    processes = [_start(tf_config, splits[0], out) for tf_config, out in runs]
    outputs = [p.communicate(timeout=300) for p in processes]
    assert [p.returncode for p in processes] == [0] * 4, [err[-2000:] for _, err in outputs]
    chief, worker, alone, fit = [json.loads(out.splitlines()[-1]) for out, _ in outputs]
    assert chief == worker and chief["replicas"] == 2  # one cluster, the same model in both
    assert alone["replicas"] == fit["replicas"] == 1 and alone["rows"] == chief["rows"] == fit["rows"]
    assert np.isclose(chief["final_loss"], alone["final_loss"], rtol=1e-4), (chief, alone)
    assert np.isclose(alone["final_loss"], fit["final_loss"], rtol=0.02), (alone, fit)
    assert (tmp_path / "chief" / "model").is_dir() and (tmp_path / "chief" / "vocab.json").is_file()
    assert not (tmp_path / "worker-1").exists()  # only the chief's export is kept

    rows = pd.read_parquet(splits[1])
    labels = (rows.late == 1).to_numpy()
    together, apart = _scores(tmp_path / "chief" / "model", rows), _scores(tmp_path / "alone" / "model", rows)
    assert np.abs(together - apart).max() < 1e-3
    assert abs(auc_estimate(labels, together).auc - auc_estimate(labels, apart).auc) < 1e-3
