"""The Open Inference Protocol v2 binary tensor data extension: raw tensors after a JSON header.

Spec: KServe's "Binary Tensor Data Extension" (the same text as Triton's
docs/protocol/extension_binary_data.md). A request or response body is a JSON inference
header of `Inference-Header-Content-Length` bytes followed by the raw data of each tensor
whose `parameters.binary_data_size` says how many bytes it takes, in the order of the
tensors. Raw data is little-endian, row major, without padding; a BOOL is one byte (0 or
1); a BYTES element is a 4-byte little-endian unsigned length followed by its bytes.
Triton's clients (`tritonclient.http`) send and expect this by default.

`decode_tensor` and `encode_tensor` are the raw layouts alone, shared with the gRPC
server's `raw_input_contents` and `raw_output_contents`, which use the same layouts; the
rest is the HTTP framing. A request is decoded into the JSON form `PredictionService.infer`
takes, so a binary request is validated, routed, logged and counted as a JSON one is.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import orjson

from serving.service import ServiceError

HEADER_LENGTH = "Inference-Header-Content-Length"
BINARY_CONTENT_TYPE = "application/octet-stream"
BYTES = "BYTES"
BYTES_PREFIX = struct.Struct("<I")  # the length before each BYTES element
FIXED_DTYPES: dict[str, np.dtype] = {
    name: np.dtype(code)
    for name, code in {
        "BOOL": "?",
        "UINT8": "u1",
        "UINT16": "<u2",
        "UINT32": "<u4",
        "UINT64": "<u8",
        "INT8": "i1",
        "INT16": "<i2",
        "INT32": "<i4",
        "INT64": "<i8",
        "FP16": "<f2",
        "FP32": "<f4",
        "FP64": "<f8",
    }.items()
}
DATATYPES = sorted([*FIXED_DTYPES, BYTES])


# More digits than any body here has: such a length is beyond every limit, and is not parsed
# (int() refuses strings of thousands of digits).
MAX_LENGTH_DIGITS = 18


def byte_count(text: str) -> int | None:
    """A length header's number of bytes (`Content-Length`, `Inference-Header-Content-Length`):
    None unless a whole decimal number; one of more than MAX_LENGTH_DIGITS digits counts as
    10**MAX_LENGTH_DIGITS, beyond any limit."""
    if not (text.isascii() and text.isdecimal()):
        return None
    return int(text) if len(text.lstrip("0")) <= MAX_LENGTH_DIGITS else 10**MAX_LENGTH_DIGITS


@dataclass(frozen=True)
class BinaryResponse:
    """A response body in the extension's framing: `header_length` bytes of JSON, then raw outputs."""

    body: bytes
    header_length: int


def decode_tensor(name: str, datatype: str, shape: list[int], raw: bytes) -> list:
    """The raw data of input `name` as a flat list of Python values (str for BYTES, int, float, bool).

    Raises:
        ServiceError: 400 naming the input, when the datatype is not one of the protocol's
            (BF16 is not supported), the shape is not a list of non-negative integers, the
            data's size is not what the shape takes, a BYTES length prefix runs past the end
            of the data, or a BYTES element is not UTF-8 (features are text).
    """
    count = _elements(name, shape)
    if datatype == BYTES:
        return _decode_bytes(name, count, raw)
    dtype = FIXED_DTYPES.get(datatype)
    if dtype is None:
        raise ServiceError(400, f"input '{name}': datatype {datatype!r} is not one of {DATATYPES}")
    if len(raw) != count * dtype.itemsize:
        raise ServiceError(
            400,
            f"input '{name}': {len(raw)} bytes of raw data, but shape {shape} of {datatype} "
            f"takes {count * dtype.itemsize} ({dtype.itemsize} per element)",
        )
    if datatype == "BOOL":  # the spec's 1 is true; any other non-zero byte is taken as true too
        return [byte != 0 for byte in raw]
    return np.frombuffer(raw, dtype=dtype).tolist()


def encode_tensor(datatype: str, values: Sequence) -> bytes:
    """Flat `values` in the raw layout of `datatype` (str or bytes elements for BYTES).

    Raises:
        ValueError: a datatype that is not one of the protocol's, or values it cannot hold.
    """
    if datatype == BYTES:
        parts = []
        for value in values:
            data = value.encode() if isinstance(value, str) else bytes(value)
            parts += [BYTES_PREFIX.pack(len(data)), data]
        return b"".join(parts)
    dtype = FIXED_DTYPES.get(datatype)
    if dtype is None:
        raise ValueError(f"datatype {datatype!r} is not one of {DATATYPES}")
    return np.asarray(values, dtype=dtype).tobytes()


def decode_request(body: bytes, header_length: str) -> dict[str, Any]:
    """A request body in the extension's framing -> the JSON inference request, each binary
    input given its decoded `data` in place of `parameters.binary_data_size`.

    Raises:
        ServiceError: 400 when the header length is not a whole number within the body, the
            header is not a JSON object, a `binary_data_size` is not a non-negative integer,
            an input has both `data` and binary data, the body ends before an input's
            data or goes on after the last, or `decode_tensor` refuses an input's data.
    """
    length = header_length.strip()
    offset = byte_count(length)
    if offset is None:
        raise ServiceError(400, f"{HEADER_LENGTH} {header_length[:40]!r} is not a whole number of bytes")
    if offset > len(body):
        raise ServiceError(400, f"{HEADER_LENGTH} {length[:40]} is beyond the body's {len(body)} bytes")
    try:
        request = orjson.loads(body[:offset])
    except orjson.JSONDecodeError as error:
        raise ServiceError(400, f"malformed JSON in the inference header: {error}") from None
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list):
        return request  # not an inference request: PredictionService.infer says what is wrong
    inputs = []
    for tensor in request["inputs"]:
        size = _binary_size(tensor)
        if size is None:
            inputs.append(tensor)
            continue
        name = str(tensor.get("name"))[:100]
        if "data" in tensor:
            raise ServiceError(400, f"input '{name}' has both \"data\" and binary_data_size")
        if offset + size > len(body):
            raise ServiceError(
                400,
                f"input '{name}': binary_data_size {size}, but the body ends {len(body) - offset} bytes "
                "after its start",
            )
        data = decode_tensor(name, str(tensor.get("datatype")), tensor.get("shape"), body[offset : offset + size])
        offset += size
        parameters = {k: v for k, v in tensor["parameters"].items() if k != "binary_data_size"}
        inputs.append({**tensor, "data": data, "parameters": parameters})
    if offset != len(body):
        declared = offset - int(length)
        raise ServiceError(400, f"{len(body) - offset} bytes after the inputs' binary data ({declared} declared)")
    return {**request, "inputs": inputs}


def encode_response(request: Any, answer: dict[str, Any]) -> dict[str, Any] | BinaryResponse:
    """`PredictionService.infer`'s answer with the outputs the request asked for as binary
    (`"binary_data": true` on a requested output, or the request's `binary_data_output`
    for every output not saying otherwise) sent raw after the JSON header; the answer as it
    is when none was asked for.
    """
    wanted = _binary_outputs(request)
    if not any(wanted(output["name"]) for output in answer["outputs"]):
        return answer
    outputs, raw = [], []
    for output in answer["outputs"]:
        if not wanted(output["name"]):
            outputs.append(output)
            continue
        data = encode_tensor(output["datatype"], output["data"])
        outputs.append(
            {
                **{k: v for k, v in output.items() if k != "data"},
                "parameters": {**output.get("parameters", {}), "binary_data_size": len(data)},
            }
        )
        raw.append(data)
    header = orjson.dumps({**answer, "outputs": outputs}, option=orjson.OPT_SERIALIZE_NUMPY)
    return BinaryResponse(header + b"".join(raw), len(header))


def _binary_outputs(request: Any) -> Callable[[str], bool]:
    """Which outputs the request wants as binary: a predicate on the output's name."""
    parameters = request.get("parameters") if isinstance(request, dict) else None
    default = isinstance(parameters, dict) and parameters.get("binary_data_output") is True
    requested = request.get("outputs") if isinstance(request, dict) else None
    choices = {}
    for output in requested if isinstance(requested, list) else []:
        if isinstance(output, dict) and isinstance(output.get("parameters"), dict):
            choice = output["parameters"].get("binary_data")
            if isinstance(choice, bool) and isinstance(output.get("name"), str):
                choices[output["name"]] = choice
    return lambda name: choices.get(name, default)


def _binary_size(tensor: Any) -> int | None:
    """An input's `parameters.binary_data_size`, None when its data is in the JSON."""
    parameters = tensor.get("parameters") if isinstance(tensor, dict) else None
    if not isinstance(parameters, dict) or "binary_data_size" not in parameters:
        return None
    size = parameters["binary_data_size"]
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        name = str(tensor.get("name"))[:100]
        raise ServiceError(400, f"input '{name}': binary_data_size {size!r} is not a non-negative integer")
    return size


def _elements(name: str, shape: Any) -> int:
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise ServiceError(400, f"input '{name}': shape {shape!r} is not a list of non-negative integers")
    return math.prod(shape)


def _decode_bytes(name: str, count: int, raw: bytes) -> list[str]:
    values, offset = [], 0
    for index in range(count):
        if offset + BYTES_PREFIX.size > len(raw):
            raise ServiceError(
                400, f"input '{name}': BYTES data ends at element {index} of {count}, before its length prefix"
            )
        (length,) = BYTES_PREFIX.unpack_from(raw, offset)
        offset += BYTES_PREFIX.size
        if offset + length > len(raw):
            raise ServiceError(
                400,
                f"input '{name}': BYTES element {index} has a length prefix of {length} bytes, "
                f"past the end of the data ({len(raw) - offset} left)",
            )
        try:
            values.append(raw[offset : offset + length].decode())
        except UnicodeDecodeError:
            raise ServiceError(400, f"input '{name}': BYTES element {index} is not valid UTF-8") from None
        offset += length
    if offset != len(raw):
        raise ServiceError(
            400, f"input '{name}': {len(raw) - offset} bytes after the {count} BYTES elements its shape declares"
        )
    return values
