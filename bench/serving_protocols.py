"""The same predictions over every protocol `ct serve` speaks, each through its official client.

Trains a flights model on a real month, publishes it, starts `ct serve` (HTTP and gRPC) in a
child process, and times from this process, one request after another on one connection,
single-row and 100-row requests of the same rows over:
  - HTTP, Open Inference Protocol v2, JSON tensors (`tritonclient.http`, binary_data=False);
  - HTTP, v2 with the binary tensor data extension (`tritonclient.http`, its default);
  - gRPC, the Open Inference Protocol's GRPCInferenceService (`tritonclient.grpc`, raw contents);
  - gRPC, TF Serving's PredictionService (`tensorflow-serving-api`, tensors from `tf.make_tensor_proto`).
Every protocol's scores are checked against the JSON path's before timing.

    .venv/bin/python bench/serving_protocols.py [--requests 500]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np
import pandas as pd
import tensorflow as tf
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from serving_load import percentiles, publish_recorded
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from components.common.datasets import load_dataset
from components.common.home import Home
from components.common.model_io import OUTPUT
from components.ingest.logic import ingest
from components.train.logic import Hyperparameters, train
from features.sources import FEATURES_FOLDER, write_sources
from pipelines.demo.sample_data import flight_spans, write_span
from pipelines.demo.serving_process import free_ports, start_serving
from serving.service import V2_DATATYPES

NUMPY_TYPES = {"string": np.object_, "int64": np.int64, "float32": np.float32}


def columns_of(frame: pd.DataFrame, signature: dict[str, str]) -> dict[str, np.ndarray]:
    return {
        name: frame[name].to_numpy().astype(NUMPY_TYPES[dtype])
        if dtype != "string"
        else frame[name].astype(str).to_numpy(dtype=object)
        for name, dtype in signature.items()
    }


def triton_inputs(module, columns: dict[str, np.ndarray], signature: dict[str, str], binary: bool) -> list:
    inputs = []
    for name, values in columns.items():
        tensor = module.InferInput(name, [len(values)], V2_DATATYPES[signature[name]])
        if module is triton_http:
            tensor.set_data_from_numpy(values, binary_data=binary)
        else:
            tensor.set_data_from_numpy(values)
        inputs.append(tensor)
    return inputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500, help="requests per protocol and size")
    args = parser.parse_args()
    dataset = load_dataset("flights")
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        home = Home(folder / "home").create()
        write_span(folder / "data", next(flight_spans(["2013-01"])))
        write_sources(folder / "data" / FEATURES_FOLDER)
        ingest(folder / "data", 1, 20, dataset.key, folder / "train.parquet", folder / "eval.parquet", dataset)
        train(folder / "train.parquet", dataset, Hyperparameters(epochs=1), folder / "model", folder / "vocab.json")
        (home.model_repository / dataset.model_name).mkdir(parents=True)
        publish_recorded(home, dataset.model_name, folder / "model")
        # Missing values filled with medians: JSON has no NaN (binary tensors and gRPC would carry it).
        frame = pd.read_parquet(folder / "eval.parquet")
        frame = frame.fillna(frame.median(numeric_only=True))
        port, grpc_port = free_ports(2)
        server = start_serving(home.root, port, [], wait_for="/v2/health/ready", grpc_port=grpc_port)
        try:
            http_client = triton_http.InferenceServerClient(f"127.0.0.1:{port}")
            grpc_client = triton_grpc.InferenceServerClient(f"127.0.0.1:{grpc_port}")
            channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
            tf_serving = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            metadata = http_client.get_model_metadata(dataset.model_name)
            signature = {
                tensor["name"]: {v: k for k, v in V2_DATATYPES.items()}[tensor["datatype"]]
                for tensor in metadata["inputs"]
            }
            model = dataset.model_name

            def http_call(binary: bool):
                def call(columns):
                    result = http_client.infer(
                        model,
                        triton_inputs(triton_http, columns, signature, binary),
                        outputs=[triton_http.InferRequestedOutput(OUTPUT, binary_data=binary)],
                    )
                    return result.as_numpy(OUTPUT)

                return call

            def grpc_call(columns):
                return grpc_client.infer(model, triton_inputs(triton_grpc, columns, signature, True)).as_numpy(OUTPUT)

            def tf_serving_call(columns):
                request = predict_pb2.PredictRequest()
                request.model_spec.name = model
                for name, values in columns.items():
                    request.inputs[name].CopyFrom(tf.make_tensor_proto(values))
                answer = tf_serving.Predict(request, timeout=10)
                return np.array(answer.outputs[OUTPUT].float_val)

            protocols = {
                "HTTP v2, JSON tensors": http_call(False),
                "HTTP v2, binary tensors": http_call(True),
                "gRPC v2 (GRPCInferenceService)": grpc_call,
                "gRPC TF Serving (Predict)": tf_serving_call,
            }
            print(f"{args.requests} requests per protocol and size, one after another on one connection (ms)")
            print(f"{'protocol':<34}{'single row':<46}{'100 rows'}")
            for name, call in protocols.items():
                cells = []
                for size in (1, 100):
                    bodies = [columns_of(frame.iloc[i : i + size], signature) for i in range(0, 2000, 100)]
                    reference = protocols["HTTP v2, JSON tensors"](bodies[0])
                    answer = np.asarray(call(bodies[0]), dtype=np.float64).reshape(-1)
                    assert answer.shape == (size,) and np.isfinite(answer).all(), f"{name}: {answer}"
                    np.testing.assert_allclose(answer, np.asarray(reference, dtype=np.float64).reshape(-1), rtol=1e-6)
                    for body in bodies[:5]:  # warm-up
                        call(body)
                    latencies = []
                    for i in range(args.requests):
                        started = time.perf_counter()
                        call(bodies[i % len(bodies)])
                        latencies.append((time.perf_counter() - started) * 1000)
                    cells.append(percentiles(np.array(latencies)))
                print(f"{name:<34}{cells[0]:<46}{cells[1]}")
            channel.close()
        finally:
            server.terminate()
            server.wait()


if __name__ == "__main__":
    main()
