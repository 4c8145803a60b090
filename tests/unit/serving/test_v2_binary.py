"""The Open Inference Protocol v2 binary tensor data extension: the codec, Triton's HTTP
client against a real server in binary, JSON and mixed modes, and malformed binary bodies."""

from __future__ import annotations

import http.client
import json
import math
import struct

import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from components.common import model_io
from serving import v2_binary
from serving.config import ServingConfig
from serving.service import ServiceError
from tests.support.serving_helpers import MODEL, call

CODEC_CASES = [
    ("BOOL", [True, False, True]),
    ("UINT8", [0, 7, 255]),
    ("UINT16", [0, 65535]),
    ("UINT32", [0, 2**32 - 1]),
    ("UINT64", [0, 2**64 - 1]),
    ("INT8", [-128, 0, 127]),
    ("INT16", [-(2**15), 2**15 - 1]),
    ("INT32", [-(2**31), 2**31 - 1]),
    ("INT64", [-(2**63), 0, 2**63 - 1]),
    ("FP16", [0.5, -2.0, 65504.0]),
    ("FP32", [0.25, -1.5, 2.0**120]),
    ("FP64", [math.pi, -1e300, 0.0]),
    ("BYTES", ["UA", "", "Zürich ✈ 東京", ""]),
    ("BYTES", []),
]


@pytest.mark.parametrize("datatype, values", CODEC_CASES)
def test_codec_round_trips_every_datatype(datatype, values):
    raw = v2_binary.encode_tensor(datatype, values)
    decoded = v2_binary.decode_tensor("x", datatype, [len(values)], raw)
    assert decoded == values and all(type(d) is type(v) for d, v in zip(decoded, values))


def test_codec_matches_the_spec_layouts():
    """Little-endian, BOOL one byte, BYTES a 4-byte little-endian length then the bytes."""
    assert v2_binary.encode_tensor("INT64", [1]) == b"\x01" + b"\x00" * 7
    assert v2_binary.encode_tensor("FP32", [1.0]) == struct.pack("<f", 1.0)
    assert v2_binary.encode_tensor("BOOL", [True, False]) == b"\x01\x00"
    assert v2_binary.encode_tensor("BYTES", ["é", ""]) == b"\x02\x00\x00\x00\xc3\xa9" + b"\x00" * 4
    assert v2_binary.decode_tensor("x", "INT32", [2, 1], struct.pack("<2i", -1, 5)) == [-1, 5]


@pytest.mark.parametrize(
    "datatype, shape, raw, message",
    [
        ("INT64", [2], b"\x00" * 12, "input 'x': 12 bytes of raw data, but shape [2] of INT64 takes 16"),
        ("BYTES", [1], b"\x05\x00\x00\x00ab", "input 'x': BYTES element 0 has a length prefix of 5 bytes, past"),
        ("BYTES", [2], b"\x01\x00\x00\x00a", "input 'x': BYTES data ends at element 1 of 2"),
        ("BYTES", [1], b"\x01\x00\x00\x00ab", "input 'x': 1 bytes after the 1 BYTES elements"),
        ("BYTES", [1], b"\x01\x00\x00\x00\xff", "input 'x': BYTES element 0 is not valid UTF-8"),
        ("BF16", [1], b"\x00\x00", "input 'x': datatype 'BF16' is not one of"),
        ("FP32", [-1], b"", "input 'x': shape [-1] is not a list of non-negative integers"),
    ],
)
def test_decode_tensor_refuses_bad_data_naming_the_input(datatype, shape, raw, message):
    with pytest.raises(ServiceError) as refused:
        v2_binary.decode_tensor("x", datatype, shape, raw)
    assert refused.value.status == 400 and message in str(refused.value)


def _complete_rows(rows, count):
    """Rows without missing values: JSON mode cannot carry NaN, and the comparison needs both modes."""
    complete = [row for row in rows if all(value is not None for value in row.values())]
    assert len(complete) >= count
    return complete[:count]


def _signature(server) -> dict[str, str]:
    status, model = call(server, f"/v2/models/{MODEL}")
    assert status == 200
    return {tensor["name"]: tensor["datatype"] for tensor in model["inputs"]}


def _triton_inputs(rows, signature, binary: bool) -> list[triton.InferInput]:
    numpy_types = {"BYTES": np.object_, "INT64": np.int64, "FP32": np.float32}
    inputs = []
    for name, datatype in signature.items():
        tensor = triton.InferInput(name, [len(rows)], datatype)
        tensor.set_data_from_numpy(np.array([row[name] for row in rows], dtype=numpy_types[datatype]), binary)
        inputs.append(tensor)
    return inputs


@pytest.mark.parametrize("binary_inputs, binary_output", [(True, True), (False, False), (True, False), (False, True)])
def test_triton_http_client_gets_the_json_paths_scores(serve, rows, binary_inputs, binary_output):
    server, *_ = serve()
    signature = _signature(server)
    assert {"BYTES", "INT64", "FP32"} <= set(signature.values())
    sample = _complete_rows(rows, 5)
    tensors = [
        {"name": n, "shape": [len(sample)], "datatype": d, "data": [r[n] for r in sample]} for n, d in signature.items()
    ]
    status, expected = call(server, f"/v2/models/{MODEL}/infer", {"inputs": tensors})
    assert status == 200
    client = triton.InferenceServerClient(url=server.url.removeprefix("http://"))
    try:
        result = client.infer(
            MODEL,
            _triton_inputs(sample, signature, binary_inputs),
            outputs=[triton.InferRequestedOutput(model_io.OUTPUT, binary_data=binary_output)],
        )
    finally:
        client.close()
    output = result.get_output(model_io.OUTPUT)
    assert ("binary_data_size" in output.get("parameters", {})) == binary_output
    assert ("data" in output) == (not binary_output)
    scores = result.as_numpy(model_io.OUTPUT)
    assert scores.dtype == np.float32 and scores.shape == (len(sample),)
    assert scores.tolist() == pytest.approx(expected["outputs"][0]["data"], abs=1e-6)
    assert result.get_response()["model_version"] == "1"


def test_triton_http_client_default_outputs_are_binary_and_errors_are_its_own(serve, rows):
    """Without requested outputs, the client asks for all of them as binary (binary_data_output);
    a refused request is the client's InferenceServerException with the server's message."""
    server, *_ = serve()
    signature = _signature(server)
    sample = _complete_rows(rows, 3)
    client = triton.InferenceServerClient(url=server.url.removeprefix("http://"))
    try:
        result = client.infer(MODEL, _triton_inputs(sample, signature, binary=True))
        assert "binary_data_size" in result.get_output(model_io.OUTPUT)["parameters"]
        assert result.as_numpy(model_io.OUTPUT).shape == (3,)
        unknown = triton.InferInput("no_such_feature", [3], "FP32")
        unknown.set_data_from_numpy(np.zeros(3, dtype=np.float32))
        with pytest.raises(InferenceServerException, match="no_such_feature"):
            client.infer(MODEL, _triton_inputs(sample, signature, binary=True) + [unknown])
    finally:
        client.close()


def _post(server, body: bytes, header_length: str | None) -> tuple[int, dict]:
    host, port = server.server_address[:2]
    connection = http.client.HTTPConnection(host, port, timeout=10)
    headers = {"Content-Type": "application/octet-stream"}
    if header_length is not None:
        headers[v2_binary.HEADER_LENGTH] = header_length
    try:
        connection.request("POST", f"/v2/models/{MODEL}/infer", body, headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def _binary_body(tensors: list[tuple[dict, bytes]]) -> tuple[bytes, int]:
    header = json.dumps(
        {"inputs": [{**t, "parameters": {"binary_data_size": len(raw)}} for t, raw in tensors]}
    ).encode()
    return header + b"".join(raw for _, raw in tensors), len(header)


def test_binary_request_without_binary_output_answers_json(serve, rows):
    server, *_ = serve()
    signature = _signature(server)
    sample = _complete_rows(rows, 2)
    body, length = _binary_body(
        [
            ({"name": n, "shape": [2], "datatype": d}, v2_binary.encode_tensor(d, [r[n] for r in sample]))
            for n, d in signature.items()
        ]
    )
    status, answer = _post(server, body, str(length))
    assert status == 200 and len(answer["outputs"][0]["data"]) == 2


@pytest.mark.parametrize(
    "case, message",
    [
        ("not a number", "Inference-Header-Content-Length 'twelve' is not a whole number"),
        ("negative", "Inference-Header-Content-Length '-5' is not a whole number"),
        ("beyond the body", "is beyond the body's"),
        ("5,000 digits", "is beyond the body's"),
        ("short body", "input 'carrier': binary_data_size 12, but the body ends 7 bytes after its start"),
        ("long body", "3 bytes after the inputs' binary data"),
        ("bytes prefix past the end", "input 'carrier': BYTES element 1 has a length prefix of 200 bytes, past"),
        ("wrong binary_data_size", "input 'distance': 4 bytes of raw data, but shape [2] of FP32 takes 8"),
        ("wrong datatype", "feature 'distance': datatype INT64, expected FP32"),
        ("unknown feature", "unknown input(s) ['no_such_feature']"),
    ],
)
def test_malformed_binary_requests_are_400_naming_the_problem(serve, case, message):
    server, *_ = serve()
    carrier = ({"name": "carrier", "shape": [2], "datatype": "BYTES"}, v2_binary.encode_tensor("BYTES", ["UA", "DL"]))
    distance = {"name": "distance", "shape": [2], "datatype": "FP32"}
    tensors = {
        "short body": [carrier],
        "long body": [carrier],
        "bytes prefix past the end": [
            (carrier[0], v2_binary.encode_tensor("BYTES", ["UA"]) + struct.pack("<I", 200) + b"DL")
        ],
        "wrong binary_data_size": [carrier, (distance, v2_binary.encode_tensor("FP32", [100.0]))],
        "wrong datatype": [carrier, ({**distance, "datatype": "INT64"}, v2_binary.encode_tensor("INT64", [1, 2]))],
        "unknown feature": [
            carrier,
            ({**distance, "name": "no_such_feature"}, v2_binary.encode_tensor("FP32", [1, 2])),
        ],
    }.get(case, [carrier])
    body, length = _binary_body(tensors)
    header_length = {
        "not a number": "twelve",
        "negative": "-5",
        "beyond the body": str(len(body) + 1),
        "5,000 digits": "9" * 5000,  # more than int() parses
    }.get(case, str(length))
    body = {"short body": body[:-5], "long body": body + b"abc"}.get(case, body)
    status, answer = _post(server, body, header_length)
    assert status == 400 and message in answer["error"], answer


def test_binary_body_over_the_limit_is_413(serve):
    server, *_ = serve(ServingConfig(poll_seconds=0.05, max_body_bytes=1000))
    raw = v2_binary.encode_tensor("BYTES", ["x" * 2000])
    body, length = _binary_body([({"name": "carrier", "shape": [1], "datatype": "BYTES"}, raw)])
    status, answer = _post(server, body, str(length))
    assert status == 413 and "over the limit of 1000" in answer["error"]
