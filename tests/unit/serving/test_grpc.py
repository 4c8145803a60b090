"""gRPC (serving/grpc_server.py) with the official clients, unchanged: TF Serving's generated
stubs with `tf.make_tensor_proto` inputs, and Triton's `tritonclient.grpc` (raw tensors)."""

from __future__ import annotations

import signal
import threading

import grpc
import numpy as np
import pytest
import tensorflow as tf
import tritonclient.grpc as triton
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from components.common.home import Home
from components.common.metadata import MetadataStore
from pipelines.demo.serving_process import free_ports, start_serving
from serving.config import ServingConfig
from serving.grpc_server import GrpcServer
from serving.request_log import read_log
from tests.support.serving_helpers import FEEDBACK, MODEL, call, publish

TF_TYPES = {"string": tf.string, "int64": tf.int64, "float32": tf.float32}
NUMPY_TYPES = {"BYTES": object, "INT64": np.int64, "FP32": np.float32}
CONTENTS = {"INT64": "int64_contents", "FP32": "fp32_contents"}


@pytest.fixture
def grpc_serve(serve):
    """`serve`'s server, and the gRPC server of its service on a free loopback port."""
    started = []

    def start(config=None):
        server, service, _, _ = serve(config)
        grpc_server = GrpcServer("127.0.0.1", 0, service)
        grpc_server.start()
        started.append(grpc_server)
        return server, service, grpc_server

    yield start
    for grpc_server in started:
        grpc_server.stop(0).wait()


def _column(rows, name):
    return [np.nan if row[name] is None else row[name] for row in rows]


def _predict_request(service, rows, name=MODEL):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    for feature, dtype in service.registry.routing.stable.signature.inputs.items():
        request.inputs[feature].CopyFrom(tf.make_tensor_proto(_column(rows, feature), dtype=TF_TYPES[dtype]))
    return request


def _triton_inputs(client, rows):
    """The rows as Triton's client sends them (raw), one input per feature the model's metadata lists."""
    inputs = []
    for feature in client.get_model_metadata(MODEL).inputs:
        tensor = triton.InferInput(feature.name, [len(rows)], feature.datatype)
        tensor.set_data_from_numpy(np.array(_column(rows, feature.name), dtype=NUMPY_TYPES[feature.datatype]))
        inputs.append(tensor)
    return inputs


def _rest_scores(server, rows):
    status, payload = call(server, f"/v1/models/{MODEL}:predict", {"instances": rows})
    assert status == 200, payload
    return payload["predictions"]


def test_tf_serving_predict_metadata_and_status(grpc_serve, rows):
    server, service, grpc_server = grpc_serve()
    with grpc.insecure_channel(grpc_server.address) as channel:
        predictions = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        for batch in (rows[:50], rows[50:51]):  # tensor_content, and one value in each *_val field
            response = predictions.Predict(
                _predict_request(service, batch), timeout=10, metadata=[("x-request-key", "caller-1")]
            )
            assert response.model_spec.version.value == 1
            np.testing.assert_allclose(
                tf.make_ndarray(response.outputs["probability"]), _rest_scores(server, batch), rtol=1e-6
            )
            ids = [i.decode() for i in tf.make_ndarray(response.outputs["request_ids"])]
            assert len(ids) == len(batch)
        feedback = {"feedback": [{"request_id": i, "label": 1} for i in ids]}
        assert call(server, f"/v1/models/{MODEL}:feedback", feedback, headers=FEEDBACK)[1]["accepted"] == len(ids)

        metadata = predictions.GetModelMetadata(
            get_model_metadata_pb2.GetModelMetadataRequest(
                model_spec={"name": MODEL}, metadata_field=["signature_def"]
            ),
            timeout=10,
        )
        signatures = get_model_metadata_pb2.SignatureDefMap()
        metadata.metadata["signature_def"].Unpack(signatures)
        signature = signatures.signature_def["serving_default"]
        assert set(signature.inputs) == set(service.registry.routing.stable.signature.inputs)
        assert metadata.model_spec.version.value == 1

        status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
            get_model_status_pb2.GetModelStatusRequest(model_spec={"name": MODEL}), timeout=10
        )
        assert [(s.version, s.state) for s in status.model_version_status] == [
            (1, get_model_status_pb2.ModelVersionStatus.AVAILABLE)
        ]


def test_open_inference_protocol_with_tritons_client(grpc_serve, rows):
    server, service, grpc_server = grpc_serve()
    client = triton.InferenceServerClient(grpc_server.address)
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(MODEL) and client.is_model_ready(MODEL, "1")
    assert not client.is_model_ready("other") and not client.is_model_ready(MODEL, "7")
    metadata = client.get_model_metadata(MODEL)
    assert metadata.versions == ["1"]
    assert [t.name for t in metadata.inputs] == list(service.registry.routing.stable.signature.inputs)
    result = client.infer(MODEL, _triton_inputs(client, rows[:50]), headers={"x-request-key": "caller-1"})
    assert result.get_response().raw_output_contents  # answered raw, as Triton does
    np.testing.assert_allclose(result.as_numpy("probability"), _rest_scores(server, rows[:50]), rtol=1e-6)
    assert result.get_response().model_version == "1"
    ids = result.get_response().parameters["request_ids"].string_param.split(",")
    feedback = {"feedback": [{"request_id": i, "label": 0} for i in ids]}
    assert call(server, f"/v1/models/{MODEL}:feedback", feedback, headers=FEEDBACK)[1]["accepted"] == 50

    # Tensors in `contents` rather than raw, through the generated stub Triton's client is built on.
    request = service_pb2.ModelInferRequest(model_name=MODEL, id="typed")
    for feature in metadata.inputs:
        values = _column(rows[:20], feature.name)
        tensor = request.inputs.add(name=feature.name, datatype=feature.datatype, shape=[len(values)])
        if feature.datatype == "BYTES":
            tensor.contents.bytes_contents.extend(v.encode() for v in values)
        else:
            getattr(tensor.contents, CONTENTS[feature.datatype]).extend(values)
    with grpc.insecure_channel(grpc_server.address) as channel:
        response = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=10)
    assert response.id == "typed"
    scores = np.frombuffer(response.raw_output_contents[0], dtype="<f4")
    np.testing.assert_allclose(scores, _rest_scores(server, rows[:20]), rtol=1e-6)


def _tf_error(address, request, metadata=()) -> grpc.RpcError:
    with grpc.insecure_channel(address) as channel, pytest.raises(grpc.RpcError) as error:
        prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=10, metadata=metadata)
    return error.value


def _triton_error(address, call) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as error:
        call(triton.InferenceServerClient(address))
    return error.value


def test_bad_requests_get_the_grpc_code_of_rests_status_naming_the_problem(grpc_serve, rows):
    _, service, grpc_server = grpc_serve(ServingConfig(poll_seconds=0.05, max_body_bytes=20_000))
    address = grpc_server.address
    string_feature = next(n for n, d in service.registry.routing.stable.signature.inputs.items() if d == "string")
    float_feature = next(n for n, d in service.registry.routing.stable.signature.inputs.items() if d == "float32")

    error = _tf_error(address, _predict_request(service, rows[:5], name="other"))
    assert error.code() == grpc.StatusCode.NOT_FOUND and "model 'other' is not served here" in error.details()
    unknown = _predict_request(service, rows[:5])
    unknown.inputs["nope"].CopyFrom(tf.make_tensor_proto([1.0] * 5))
    error = _tf_error(address, unknown)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "unknown input(s) ['nope']" in error.details()
    wrong_type = _predict_request(service, rows[:5])
    wrong_type.inputs[float_feature].CopyFrom(tf.make_tensor_proto(["x"] * 5))
    error = _tf_error(address, wrong_type)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"feature '{float_feature}': expected a number, got 'x'" in error.details()
    error = _tf_error(address, _predict_request(service, rows[:5]), [("x-request-key", "k" * 300)])
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "request key of 300 characters" in error.details()
    error = _tf_error(address, _predict_request(service, rows * 10))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # A few bytes declaring five million values to fill: refused before anything is filled.
    filled = _predict_request(service, rows[:5])
    filled.inputs[float_feature].CopyFrom(
        tensor_pb2.TensorProto(
            dtype=types_pb2.DT_FLOAT,
            tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=[{"size": 5_000_000}]),
            float_val=[1.0],
        )
    )
    error = _tf_error(address, filled)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"feature '{float_feature}': shape [5000000]: expected 0 to 2500 values" in error.details()

    inputs = _triton_inputs(triton.InferenceServerClient(address), rows[:5])
    error = _triton_error(address, lambda client: client.infer("other", inputs))
    assert error.status() == "StatusCode.NOT_FOUND" and "model 'other' is not served here" in error.message()
    error = _triton_error(address, lambda client: client.get_model_metadata("other"))
    assert error.status() == "StatusCode.NOT_FOUND"
    wrong = triton.InferInput(string_feature, [5], "FP64")
    wrong.set_data_from_numpy(np.zeros(5))
    renamed = triton.InferInput("nope", [5], "FP32")
    renamed.set_data_from_numpy(np.zeros(5, dtype=np.float32))
    others = [t for t in inputs if t.name() != string_feature]
    error = _triton_error(address, lambda client: client.infer(MODEL, [*others, wrong]))
    assert error.status() == "StatusCode.INVALID_ARGUMENT"
    assert f"feature '{string_feature}': datatype FP64, expected BYTES" in error.message()
    error = _triton_error(address, lambda client: client.infer(MODEL, [*inputs, renamed]))
    assert error.status() == "StatusCode.INVALID_ARGUMENT" and "unknown input(s) ['nope']" in error.message()
    error = _triton_error(address, lambda client: client.infer(MODEL, _triton_inputs(client, rows * 10)))
    assert error.status() == "StatusCode.RESOURCE_EXHAUSTED"


def test_calls_beyond_the_concurrency_limit_are_refused(grpc_serve, rows, monkeypatch):
    _, service, grpc_server = grpc_serve(ServingConfig(poll_seconds=0.05, max_concurrent_requests=1))
    entered, release = threading.Event(), threading.Event()
    predict = service.predict

    def slow_predict(*args):
        entered.set()
        release.wait(10)
        return predict(*args)

    monkeypatch.setattr(service, "predict", slow_predict)
    with grpc.insecure_channel(grpc_server.address) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        first = stub.Predict.future(_predict_request(service, rows[:5]), timeout=10)
        assert entered.wait(10)
        with pytest.raises(grpc.RpcError) as error:
            stub.Predict(_predict_request(service, rows[:5]), timeout=10)
        assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        release.set()
        assert len(first.result().outputs["probability"].float_val) == 5


def test_ct_serve_serves_grpc_and_drains_it_on_sigterm(tmp_path, trained_model, rows):
    home = Home(tmp_path / "home").create()
    publish(home.model_repository, trained_model, 1, MetadataStore(home.metadata_connection))
    port, grpc_port = free_ports(2)
    process = start_serving(home.root, port, wait_for="/v2/health/ready", grpc_port=grpc_port)
    try:
        client = triton.InferenceServerClient(f"127.0.0.1:{grpc_port}")
        result = client.infer(MODEL, _triton_inputs(client, rows[:30]))
        ids = result.get_response().parameters["request_ids"].string_param.split(",")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        process.kill()
    assert sorted(read_log(home.request_log).request_id) == sorted(ids)
