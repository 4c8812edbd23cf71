"""Open Inference Protocol bodies: JSON tensors and Triton's binary tensor data extension.

A binary request is a JSON header of ``Inference-Header-Content-Length`` bytes followed by the raw
tensors, in input order, of every input whose ``parameters.binary_data_size`` is set. BYTES tensors
are serialised element by element as a 4-byte little-endian length followed by the bytes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson

from tierserve.datatypes import Datatype, from_name
from tierserve.engine.request import InferRequest, InferResponse, InputTensor, RequestedOutput
from tierserve.errors import InvalidInput
from tierserve.wire import as_bytes, tensor_from_bytes, tensor_to_bytes

HEADER_LENGTH = "inference-header-content-length"
_JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


def decode_request(body: bytes, header_length: str | None) -> InferRequest:
    json_part, binary = _split_body(body, header_length)
    try:
        doc = orjson.loads(json_part)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"failed to parse the request JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidInput("the request body must be a JSON object")
    parameters = _mapping(doc.get("parameters"), "request parameters")
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidInput("request 'id' must be a string")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InvalidInput("request must have a non-empty 'inputs' array")
    reader = _BinaryReader(binary)
    inputs = [_decode_input(raw, reader) for raw in raw_inputs]
    reader.finish()
    binary_output = parameters.get("binary_data_output", False)
    if not isinstance(binary_output, bool):
        raise InvalidInput("parameter 'binary_data_output' must be a boolean")
    return InferRequest(
        inputs=inputs,
        id=request_id,
        outputs=_decode_outputs(doc.get("outputs")),
        parameters=parameters,
        binary_output=binary_output,
    )


def encode_response(response: InferResponse) -> tuple[bytes, dict[str, str]]:
    """The response body and its headers (JSON, or JSON + binary when any output is binary)."""
    outputs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for tensor in response.outputs:
        entry: dict[str, Any] = {
            "name": tensor.name,
            "datatype": tensor.datatype.name,
            "shape": list(tensor.array.shape),
        }
        if tensor.binary:
            blob = tensor_to_bytes(tensor.array, tensor.datatype)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = _to_json_data(tensor.array, tensor.datatype)
        outputs.append(entry)
    doc: dict[str, Any] = {"model_name": response.model_name, "model_version": response.model_version}
    if response.id is not None:
        doc["id"] = response.id
    doc["outputs"] = outputs
    header = orjson.dumps(doc, option=_JSON_OPTIONS)
    if not blobs:
        return header, {"content-type": "application/json"}
    return b"".join([header, *blobs]), {
        "content-type": "application/octet-stream",
        "inference-header-content-length": str(len(header)),
    }


# -- request parts -----------------------------------------------------------------------------


def _split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    if header_length is None:
        return body, b""
    try:
        length = int(header_length)
    except ValueError:
        raise InvalidInput(
            f"Inference-Header-Content-Length must be an integer, got '{header_length}'"
        ) from None
    if length < 0:
        raise InvalidInput(f"Inference-Header-Content-Length must not be negative, got {length}")
    if length > len(body):
        raise InvalidInput(
            f"Inference-Header-Content-Length {length} is larger than the body ({len(body)} bytes)"
        )
    return body[:length], body[length:]


class _BinaryReader:
    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)
        self._offset = 0

    def take(self, size: int, name: str) -> memoryview:
        end = self._offset + size
        if size < 0 or end > len(self._data):
            raise InvalidInput(
                f"input '{name}' declares binary_data_size {size}, but only "
                f"{len(self._data) - self._offset} bytes of binary data remain"
            )
        chunk = self._data[self._offset : end]
        self._offset = end
        return chunk

    def finish(self) -> None:
        extra = len(self._data) - self._offset
        if extra:
            raise InvalidInput(f"{extra} bytes of binary data follow the inputs and belong to none of them")


def _mapping(value: object, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput(f"{what} must be a JSON object")
    return value


def _shape(raw: object, name: str) -> tuple[int, ...]:
    if not isinstance(raw, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in raw
    ):
        raise InvalidInput(f"input '{name}' needs 'shape', a list of non-negative integers")
    return tuple(raw)


def _decode_input(raw: object, reader: _BinaryReader) -> InputTensor:
    if not isinstance(raw, dict):
        raise InvalidInput("each input must be a JSON object")
    name = raw.get("name")
    if not isinstance(name, str):
        raise InvalidInput("each input needs a string 'name'")
    datatype_name = raw.get("datatype")
    if not isinstance(datatype_name, str):
        raise InvalidInput(f"input '{name}' needs a string 'datatype'")
    datatype = from_name(datatype_name)
    shape = _shape(raw.get("shape"), name)
    parameters = _mapping(raw.get("parameters"), f"parameters of input '{name}'")
    if "shared_memory_region" in parameters:
        raise InvalidInput("shared-memory inputs are not supported by this server")
    size = parameters.get("binary_data_size")
    if size is not None:
        if isinstance(size, bool) or not isinstance(size, int):
            raise InvalidInput(f"input '{name}': binary_data_size must be an integer")
        if "data" in raw:
            raise InvalidInput(f"input '{name}' has both 'data' and binary_data_size")
        array = tensor_from_bytes(reader.take(size, name), datatype, shape, name)
    elif "data" in raw:
        array = _from_json_data(raw["data"], datatype, shape, name)
    else:
        raise InvalidInput(f"input '{name}' has neither 'data' nor binary_data_size")
    return InputTensor(name, datatype, array)


def _decode_outputs(raw: object) -> list[RequestedOutput] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise InvalidInput("'outputs' must be an array")
    outputs = []
    for entry in raw:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise InvalidInput("each requested output needs a string 'name'")
        parameters = _mapping(entry.get("parameters"), f"parameters of output '{entry['name']}'")
        if "shared_memory_region" in parameters:
            raise InvalidInput("shared-memory outputs are not supported by this server")
        if parameters.get("classification"):
            raise InvalidInput("the classification extension is not supported by this server")
        binary = parameters.get("binary_data")
        if binary is not None and not isinstance(binary, bool):
            raise InvalidInput(f"output '{entry['name']}': binary_data must be a boolean")
        outputs.append(RequestedOutput(entry["name"], binary))
    return outputs


# -- tensor data -------------------------------------------------------------------------------


def _from_json_data(data: object, datatype: Datatype, shape: tuple[int, ...], name: str) -> np.ndarray:
    count = math.prod(shape)
    if not isinstance(data, list):
        data = [data]
    if datatype.kind == "bytes":
        flat = _flatten_strings(data, name)
        array = np.empty(len(flat), dtype=object)
        array[:] = flat
    else:
        array = _numbers(data, datatype, name)
    if array.size != count:
        raise InvalidInput(f"input '{name}': {array.size} values for shape {list(shape)} ({count} expected)")
    return array.reshape(shape)


_ACCEPTED_KINDS = {"int": "iu", "uint": "iu", "float": "iuf", "bool": "b"}


def _numbers(data: list[Any], datatype: Datatype, name: str) -> np.ndarray:
    try:
        parsed = np.asarray(data)
    except (ValueError, OverflowError) as exc:
        raise InvalidInput(f"input '{name}': 'data' is not a regular array of numbers ({exc})") from None
    if parsed.size == 0:
        return parsed.astype(datatype.numpy).ravel()
    if parsed.dtype.kind not in _ACCEPTED_KINDS[datatype.kind]:
        raise InvalidInput(
            f"input '{name}': 'data' holds {_describe(parsed.dtype)}, "
            f"which is not valid for datatype {datatype.name}"
        )
    if datatype.kind in ("int", "uint"):
        info = np.iinfo(datatype.numpy)  # type: ignore[type-var]
        if parsed.min() < info.min or parsed.max() > info.max:
            raise InvalidInput(f"input '{name}': values out of range for {datatype.name}")
    converted = parsed.astype(datatype.numpy, copy=False).ravel()
    if datatype.kind == "float" and not np.isfinite(converted).all() and np.isfinite(parsed).all():
        raise InvalidInput(f"input '{name}': values out of range for {datatype.name}")
    return converted


def _describe(dtype: np.dtype[Any]) -> str:
    return {
        "f": "floating-point numbers",
        "b": "booleans",
        "U": "strings",
        "O": "mixed values",
        "i": "integers",
        "u": "integers",
    }.get(dtype.kind, str(dtype))


def _flatten_strings(data: list[Any], name: str) -> list[bytes]:
    """Flatten nested string lists row-major, refusing ragged nesting as numeric data does."""
    level: list[Any] = data
    while level and all(isinstance(item, list) for item in level):
        if len({len(item) for item in level}) != 1:
            raise InvalidInput(f"input '{name}': nested 'data' is ragged")
        level = [x for item in level for x in item]
    for item in level:
        if isinstance(item, list):
            raise InvalidInput(f"input '{name}': nested 'data' is ragged")
        if not isinstance(item, str):
            raise InvalidInput(f"input '{name}': BYTES data must be strings, got {type(item).__name__}")
    return [item.encode() for item in level]


def _to_json_data(array: np.ndarray, datatype: Datatype) -> Any:
    if datatype.kind == "bytes":
        return [as_bytes(item).decode("utf-8", "replace") for item in array.ravel()]
    if datatype.name == "FP16":
        return array.astype(np.float32).ravel()
    return np.ascontiguousarray(array).ravel()


def parse_json_object(body: bytes, what: str) -> Mapping[str, Any]:
    """A small JSON object body (admin routes); empty means ``{}``."""
    if not body.strip():
        return {}
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"failed to parse the {what} JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidInput(f"the {what} body must be a JSON object")
    return doc
