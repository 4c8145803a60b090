"""gRPC for the prediction service, on a port of its own: TF Serving's and the Open Inference Protocol's.

- TF Serving (`tensorflow_serving/apis/prediction_service.proto`, `model_service.proto`):
  `PredictionService.Predict` and `GetModelMetadata`, `ModelService.GetModelStatus`.
- Open Inference Protocol v2 (KServe; Triton's `grpc_service.proto`, stubs from
  `tritonclient.grpc`): `GRPCInferenceService.ServerLive`, `ServerReady`, `ModelReady`,
  `ModelMetadata`, `ModelInfer` (tensors in `contents` or `raw_input_contents`; answered
  with `raw_output_contents`, as Triton does).

Each RPC is translated into the body the REST path passes and the same call on
`PredictionService`, so routing (gRPC metadata `x-request-key`, as the `X-Request-Key`
header), canary, request log, feature lookup, metrics and validation are REST's. A
`ServiceError` becomes the gRPC status of `STATUS_CODES` with the same message. Other
RPCs of these services (Classify, Regress, ModelStreamInfer, the repository and shared
memory RPCs, ...) answer UNIMPLEMENTED.

Bounded as REST is (ServingConfig): a message over `max_body_bytes` is refused
(RESOURCE_EXHAUSTED, by gRPC before it is read), and `max_concurrent_requests` RPCs run at
once on as many workers; a call beyond them is refused at once with RESOURCE_EXHAUSTED
(a gRPC client retries; REST's 2 s wait for a slot has no equivalent in grpcio).
"""

from __future__ import annotations

import logging
import threading
from concurrent import futures
from typing import Any, Callable, Iterable, TypeVar

import grpc
import numpy as np
from google.protobuf import json_format
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)
from tritonclient.grpc import service_pb2, service_pb2_grpc

from components.common import model_io
from serving.service import PredictionService, ServiceError
from serving.v2_binary import decode_tensor, encode_tensor

log = logging.getLogger(__name__)

STATUS_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,  # no version loaded yet, a log that cannot be kept: retry later
}
# A Predict tensor may declare at most as many values as the body limit would carry at this
# many bytes each (as `tensor_content` of 8-byte values would).
BYTES_PER_VALUE = 8
REQUEST_KEY = "x-request-key"  # gRPC metadata keys are lower case
REQUEST_IDS = "request_ids"  # TF: an extra DT_STRING output; v2: a response parameter, ids joined by commas

# TensorProto dtype -> (the repeated field its values are in, the element type of `tensor_content`),
# as TensorFlow's Tensor::FromProto reads them.
TENSOR_FIELDS: dict[int, tuple[str, type | None]] = {
    types_pb2.DT_FLOAT: ("float_val", np.float32),
    types_pb2.DT_DOUBLE: ("double_val", np.float64),
    types_pb2.DT_INT8: ("int_val", np.int8),
    types_pb2.DT_INT16: ("int_val", np.int16),
    types_pb2.DT_INT32: ("int_val", np.int32),
    types_pb2.DT_UINT8: ("int_val", np.uint8),
    types_pb2.DT_INT64: ("int64_val", np.int64),
    types_pb2.DT_STRING: ("string_val", None),
}
# Open Inference Protocol datatype -> its field of InferTensorContents.
V2_CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}

Reply = TypeVar("Reply")


def _answer(context: grpc.ServicerContext, call: Callable[[], Reply]) -> Reply:
    """`call()`'s reply; a ServiceError aborts the RPC with its gRPC code and message, anything
    else with INTERNAL naming the error's type (as REST's 500)."""
    try:
        return call()
    except ServiceError as error:
        code, message = STATUS_CODES.get(error.status, grpc.StatusCode.INTERNAL), str(error)
    except Exception as error:  # never let a call take the server down; say what failed
        log.exception("unexpected error in a gRPC call")
        code, message = grpc.StatusCode.INTERNAL, f"internal error: {type(error).__name__}"
    context.abort(code, message)  # raises


def _request_key(context: grpc.ServicerContext) -> str | None:
    return next((str(value) for key, value in context.invocation_metadata() if key == REQUEST_KEY), None)


def _v2_version(name: str, text: str) -> int | None:
    """A v2 `model_version` ("" for the one routing chooses); not a version number: 404, as REST's path."""
    if not text:
        return None
    if not (text.isascii() and text.isdecimal() and len(text) <= 18):
        raise ServiceError(404, f"model '{name}' has no version {text[:40]!r}")
    return int(text)


def _spec(spec: model_pb2.ModelSpec) -> tuple[int | None, str | None]:
    """The version or label a TF Serving ModelSpec names, and checks its signature name."""
    if spec.signature_name not in ("", model_io.SIGNATURE):
        raise ServiceError(400, f"signature '{spec.signature_name[:64]}' not found (serving '{model_io.SIGNATURE}')")
    choice = spec.WhichOneof("version_choice")
    if choice == "version":
        return spec.version.value, None
    return None, (spec.version_label if choice == "version_label" else None)


def tensor_values(name: str, tensor: tensor_pb2.TensorProto, max_values: int) -> list[Any]:
    """A TensorProto of shape [n] or [n, 1] as a column of n Python values, read as TF Serving
    reads it: from `tensor_content` (little-endian) when set, else from the dtype's `*_val`
    field, whose last value fills the rest when it has fewer (none: zeros).

    `max_values` bounds n: a few bytes of proto may declare millions of values to fill, which
    the message size limit does not see."""
    dims = [d.size for d in tensor.tensor_shape.dim]
    if len(dims) not in (1, 2) or (len(dims) == 2 and dims[1] != 1):
        raise ServiceError(400, f"feature '{name}': shape {dims}, expected [n] or [n, 1]")
    if not 0 <= dims[0] <= max_values:
        raise ServiceError(400, f"feature '{name}': shape {dims}: expected 0 to {max_values} values")
    if tensor.dtype not in TENSOR_FIELDS:
        raise ServiceError(
            400,
            f"feature '{name}': dtype {types_pb2.DataType.Name(tensor.dtype)} is not supported "
            f"(send {', '.join(types_pb2.DataType.Name(d) for d in TENSOR_FIELDS)})",
        )
    field, element = TENSOR_FIELDS[tensor.dtype]
    count = dims[0]
    if tensor.tensor_content and element is not None:
        content = np.dtype(element).newbyteorder("<")
        if len(tensor.tensor_content) != count * content.itemsize:
            raise ServiceError(
                400, f"feature '{name}': tensor_content of {len(tensor.tensor_content)} bytes for {count} values"
            )
        return np.frombuffer(tensor.tensor_content, dtype=content).tolist()
    given = list(getattr(tensor, field))
    if len(given) > count:
        raise ServiceError(400, f"feature '{name}': {len(given)} values for shape {dims}")
    values = given + given[-1:] * (count - len(given)) if given else [b"" if element is None else 0] * count
    if element is None:
        try:
            return [value.decode() for value in values]
        except UnicodeDecodeError:
            raise ServiceError(400, f"feature '{name}': a string that is not UTF-8") from None
    return values


def _v2_values(tensor: service_pb2.ModelInferRequest.InferInputTensor, raw: bytes | None) -> list[Any]:
    """An input tensor's values, flat: from its raw contents (the v2 binary layout), else from
    the `contents` field of its datatype."""
    if raw is not None:
        return decode_tensor(tensor.name, tensor.datatype, list(tensor.shape), raw)
    field = V2_CONTENTS.get(tensor.datatype)
    if field is None:
        raise ServiceError(400, f"feature '{tensor.name}': datatype {tensor.datatype[:32]!r} is not supported")
    values = list(getattr(tensor.contents, field))
    if tensor.datatype != "BYTES":
        return values
    try:
        return [value.decode() for value in values]
    except UnicodeDecodeError:
        raise ServiceError(400, f"feature '{tensor.name}': a string that is not UTF-8") from None


def infer_body(request: service_pb2.ModelInferRequest) -> dict[str, Any]:
    """A ModelInferRequest as the JSON body of REST's `/v2/models/{name}/infer`."""
    raws: Iterable[bytes | None] = request.raw_input_contents or [None] * len(request.inputs)
    if request.raw_input_contents and len(request.raw_input_contents) != len(request.inputs):
        raise ServiceError(
            400,
            f"{len(request.raw_input_contents)} raw_input_contents for {len(request.inputs)} inputs "
            "(one each, in the order of the inputs)",
        )
    inputs = [
        {"name": t.name, "shape": list(t.shape), "datatype": t.datatype, "data": _v2_values(t, raw)}
        for t, raw in zip(request.inputs, raws)
    ]
    return {"inputs": inputs, **({"id": request.id} if request.id else {})}


class TFServingPredictions(prediction_service_pb2_grpc.PredictionServiceServicer):
    """TF Serving's `tensorflow.serving.PredictionService`: Predict and GetModelMetadata."""

    def __init__(self, service: PredictionService):
        self.service = service

    def Predict(  # noqa: N802 (the proto's naming)
        self, request: predict_pb2.PredictRequest, context: grpc.ServicerContext
    ) -> predict_pb2.PredictResponse:
        """Columns (`inputs`: feature -> TensorProto) scored as REST's `{"inputs": {...}}`; the
        answer has the scores (DT_FLOAT [n]) and the request ids (DT_STRING [n], for feedback)."""

        def call() -> predict_pb2.PredictResponse:
            version, label = _spec(request.model_spec)
            most = self.service.config.max_body_bytes // BYTES_PER_VALUE
            columns = {name: tensor_values(name, tensor, most) for name, tensor in request.inputs.items()}
            answer = self.service.predict(
                request.model_spec.name, {"inputs": columns}, version, label, _request_key(context)
            )
            response = predict_pb2.PredictResponse()
            response.model_spec.name = request.model_spec.name
            response.model_spec.version.value = int(answer["model_version"])
            response.model_spec.signature_name = model_io.SIGNATURE
            scores, ids = answer["outputs"], answer["request_ids"]
            output = response.outputs[model_io.OUTPUT]
            output.dtype = types_pb2.DT_FLOAT
            output.tensor_shape.dim.add().size = len(scores)
            output.float_val.extend(scores)
            request_ids = response.outputs[REQUEST_IDS]
            request_ids.dtype = types_pb2.DT_STRING
            request_ids.tensor_shape.dim.add().size = len(ids)
            request_ids.string_val.extend(i.encode() for i in ids)
            return response

        return _answer(context, call)

    def GetModelMetadata(  # noqa: N802
        self, request: get_model_metadata_pb2.GetModelMetadataRequest, context: grpc.ServicerContext
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        """The serving signature (`signature_def`, the one metadata field TF Serving has)."""

        def call() -> get_model_metadata_pb2.GetModelMetadataResponse:
            unsupported = sorted(set(request.metadata_field) - {"signature_def"})
            if unsupported:
                raise ServiceError(400, f"metadata field(s) {unsupported[:4]} not supported (only signature_def)")
            version, label = _spec(request.model_spec)
            metadata = self.service.metadata(request.model_spec.name, version, label)
            response = get_model_metadata_pb2.GetModelMetadataResponse()
            json_format.ParseDict(metadata["model_spec"], response.model_spec)
            signatures = json_format.ParseDict(
                metadata["metadata"]["signature_def"], get_model_metadata_pb2.SignatureDefMap()
            )
            response.metadata["signature_def"].Pack(signatures)
            return response

        return _answer(context, call)


class TFServingModels(model_service_pb2_grpc.ModelServiceServicer):
    """TF Serving's `tensorflow.serving.ModelService`: GetModelStatus."""

    def __init__(self, service: PredictionService):
        self.service = service

    def GetModelStatus(  # noqa: N802
        self, request: get_model_status_pb2.GetModelStatusRequest, context: grpc.ServicerContext
    ) -> get_model_status_pb2.GetModelStatusResponse:
        """Served versions AVAILABLE, failed ones END with their error (REST's `GET /v1/models/{name}`)."""

        def call() -> get_model_status_pb2.GetModelStatusResponse:
            version, label = _spec(request.model_spec)
            status = self.service.status(request.model_spec.name, version, label)
            return json_format.ParseDict(
                status, get_model_status_pb2.GetModelStatusResponse(), ignore_unknown_fields=True
            )

        return _answer(context, call)


class OpenInference(service_pb2_grpc.GRPCInferenceServiceServicer):
    """The Open Inference Protocol's `inference.GRPCInferenceService` (KServe v2, Triton)."""

    def __init__(self, service: PredictionService):
        self.service = service

    def ServerLive(  # noqa: N802
        self, request: service_pb2.ServerLiveRequest, context: grpc.ServicerContext
    ) -> service_pb2.ServerLiveResponse:
        return service_pb2.ServerLiveResponse(live=True)

    def ServerReady(  # noqa: N802
        self, request: service_pb2.ServerReadyRequest, context: grpc.ServicerContext
    ) -> service_pb2.ServerReadyResponse:
        return service_pb2.ServerReadyResponse(ready=self.service.ready())

    def ModelReady(  # noqa: N802
        self, request: service_pb2.ModelReadyRequest, context: grpc.ServicerContext
    ) -> service_pb2.ModelReadyResponse:
        try:
            version = _v2_version(request.name, request.version)
        except ServiceError:
            return service_pb2.ModelReadyResponse(ready=False)
        return service_pb2.ModelReadyResponse(ready=self.service.ready(request.name, version))

    def ModelMetadata(  # noqa: N802
        self, request: service_pb2.ModelMetadataRequest, context: grpc.ServicerContext
    ) -> service_pb2.ModelMetadataResponse:
        def call() -> service_pb2.ModelMetadataResponse:
            model = self.service.v2_model(request.name, _v2_version(request.name, request.version))
            return json_format.ParseDict(model, service_pb2.ModelMetadataResponse())

        return _answer(context, call)

    def ModelInfer(  # noqa: N802
        self, request: service_pb2.ModelInferRequest, context: grpc.ServicerContext
    ) -> service_pb2.ModelInferResponse:
        """REST's infer; the outputs' values in `raw_output_contents` (the v2 binary layout)."""

        def call() -> service_pb2.ModelInferResponse:
            version = _v2_version(request.model_name, request.model_version)
            answer = self.service.infer(request.model_name, infer_body(request), version, _request_key(context))
            response = service_pb2.ModelInferResponse(
                model_name=answer["model_name"], model_version=answer["model_version"], id=answer["id"]
            )
            for output in answer["outputs"]:
                response.outputs.add(name=output["name"], datatype=output["datatype"], shape=output["shape"])
                response.raw_output_contents.append(encode_tensor(output["datatype"], output["data"]))
            response.parameters[REQUEST_IDS].string_param = ",".join(answer["parameters"][REQUEST_IDS])
            return response

        return _answer(context, call)


class GrpcServer:
    """The gRPC server of one PredictionService, listening on host:port (0: a free port);
    `shared`: on a port the workers of one `ct serve` share (serving/workers.py)."""

    def __init__(self, host: str, port: int, service: PredictionService, shared: bool = False):
        limit = service.config.max_concurrent_requests
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=limit, thread_name_prefix="grpc"),
            maximum_concurrent_rpcs=limit,
            options=[
                ("grpc.max_receive_message_length", service.config.max_body_bytes),
                ("grpc.so_reuseport", int(shared)),  # else a port in use is an error, as for the HTTP server
            ],
        )
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(TFServingPredictions(service), self._server)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(TFServingModels(service), self._server)
        service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(OpenInference(service), self._server)
        self.host = host
        address = f"[{host}]" if ":" in host else host
        try:
            self.port = self._server.add_insecure_port(f"{address}:{port}")
        except RuntimeError:  # grpcio's "Failed to bind", which names no cause
            raise OSError(
                f"cannot listen for gRPC on {address}:{port} (in use, or not an address of this host)"
            ) from None

    @property
    def address(self) -> str:
        """host:port, as gRPC clients take it."""
        return f"{self.host}:{self.port}"

    def start(self) -> None:
        self._server.start()

    def stop(self, grace: float) -> threading.Event:
        """Refuses new calls at once and cancels those still running after `grace` seconds;
        returns a threading.Event set when the server has stopped."""
        return self._server.stop(grace)
