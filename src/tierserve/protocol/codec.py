"""Open Inference Protocol bodies: JSON tensors and Triton's binary tensor data extension.

A binary request is a JSON header of ``Inference-Header-Content-Length`` bytes followed by the raw
tensors, in input order, of every input whose ``parameters.binary_data_size`` is set. BYTES tensors
are serialised element by element as a 4-byte little-endian length followed by the bytes.

As in Triton: ``NaN``, ``Infinity`` and ``-Infinity`` are JSON tokens both ways (Python's ``json``
reads and writes them; a ``null`` would read back as NaN for all three); BYTES ``data`` nests at most
``MAX_JSON_DEPTH`` arrays deep; an input or output may live in a registered shared-memory region
(``shared_memory_region``, ``shared_memory_byte_size``, ``shared_memory_offset``); an output may ask
for its top-k classes (``classification``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np
import orjson

from tierserve.datatypes import Datatype, from_name
from tierserve.engine.request import InferRequest, InferResponse, InputTensor, RequestedOutput
from tierserve.errors import InvalidInput
from tierserve.wire import as_bytes, tensor_from_bytes, tensor_to_bytes

HEADER_LENGTH = "inference-header-content-length"
MAX_JSON_DEPTH = 100  # Triton's HTTP_MAX_JSON_NESTING_DEPTH for BYTES data
MAX_DIMS = 32  # NumPy 1.x holds no more (2.x: 64)
_JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY
_NON_FINITE = re.compile(rb"NaN|Infinity")


class SharedMemoryReader(Protocol):
    def read(self, name: str, offset: int, size: int) -> bytes: ...


def decode_request(
    body: bytes, header_length: str | None, regions: SharedMemoryReader | None = None
) -> InferRequest:
    json_part, binary = _split_body(body, header_length)
    doc = _loads(json_part)
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
    inputs = [_decode_input(raw, reader, regions) for raw in raw_inputs]
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


def encode_response(
    response: InferResponse, placed: Mapping[str, Mapping[str, Any]] | None = None
) -> tuple[bytes, dict[str, str]]:
    """The response body and its headers (JSON, or JSON + binary when any output is binary).

    ``placed`` names the outputs already written to shared memory, with the parameters that say
    where: those carry no data."""
    outputs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    non_finite: dict[int, np.ndarray] = {}  # output index -> float data holding NaN or infinities
    for tensor in response.outputs:
        entry: dict[str, Any] = {
            "name": tensor.name,
            "datatype": tensor.datatype.name,
            "shape": list(tensor.array.shape),
        }
        if placed and tensor.name in placed:
            entry["parameters"] = dict(placed[tensor.name])
        elif tensor.binary:
            blob = tensor_to_bytes(tensor.array, tensor.datatype)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            data = _to_json_data(tensor.array, tensor.datatype)
            if tensor.datatype.kind == "float" and not np.isfinite(data).all():
                non_finite[len(outputs)] = data
            else:
                entry["data"] = data
        outputs.append(entry)
    doc: dict[str, Any] = {"model_name": response.model_name, "model_version": response.model_version}
    if response.id is not None:
        doc["id"] = response.id
    doc["outputs"] = outputs
    header = _dumps_with_tokens(doc, non_finite) if non_finite else orjson.dumps(doc, option=_JSON_OPTIONS)
    if not blobs:
        return header, {"content-type": "application/json"}
    return b"".join([header, *blobs]), {
        "content-type": "application/octet-stream",
        "inference-header-content-length": str(len(header)),
    }


def _loads(text: bytes) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        if not _NON_FINITE.search(text):
            raise InvalidInput(f"failed to parse the request JSON: {exc}") from None
    # Triton's parser takes NaN and infinities; orjson refuses them and Python's json reads them.
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise InvalidInput(f"failed to parse the request JSON: {exc}") from None


def _dumps_with_tokens(doc: dict[str, Any], non_finite: Mapping[int, np.ndarray]) -> bytes:
    """``doc`` as JSON where the outputs in ``non_finite`` get their data with NaN/Infinity tokens.

    orjson writes a non-finite float as ``null``, so each such output's data is written apart: in
    numeric data every ``null`` stands for the next non-finite value, in order."""
    outputs = doc["outputs"]
    parts = [orjson.dumps({k: v for k, v in doc.items() if k != "outputs"})[:-1], b',"outputs":[']
    for index, entry in enumerate(outputs):
        if index:
            parts.append(b",")
        text = orjson.dumps(entry, option=_JSON_OPTIONS)
        data = non_finite.get(index)
        if data is None:
            parts.append(text)
            continue
        pieces = orjson.dumps(data, option=_JSON_OPTIONS).split(b"null")
        values = data[~np.isfinite(data)]
        tokens = [b"NaN" if math.isnan(v) else b"Infinity" if v > 0 else b"-Infinity" for v in values]
        joined = [pieces[0]]
        for token, piece in zip(tokens, pieces[1:], strict=True):
            joined += [token, piece]
        parts += [text[:-1], b',"data":', *joined, b"}"]
    parts.append(b"]}")
    return b"".join(parts)


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
    if len(raw) > MAX_DIMS:
        raise InvalidInput(f"input '{name}': a shape has at most {MAX_DIMS} dimensions, got {len(raw)}")
    # numpy refuses an array whose extent (zero dimensions aside) overflows 63 bits, even when empty.
    if math.prod(max(d, 1) for d in raw) >= 2**58:
        raise InvalidInput(f"input '{name}': shape {raw} is larger than any tensor can be")
    return tuple(raw)


def _region(parameters: Mapping[str, Any], what: str) -> tuple[str, int, int] | None:
    """``(region, offset, byte_size)`` when the tensor lives in shared memory."""
    region = parameters.get("shared_memory_region")
    if region is None:
        return None
    if not isinstance(region, str):
        raise InvalidInput(f"{what}: shared_memory_region must be a string")
    size = _non_negative(parameters.get("shared_memory_byte_size"), f"{what}: shared_memory_byte_size")
    offset = _non_negative(parameters.get("shared_memory_offset", 0), f"{what}: shared_memory_offset")
    return region, offset, size


def _non_negative(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInput(f"{what} must be a non-negative integer")
    return value


def _decode_input(raw: object, reader: _BinaryReader, regions: SharedMemoryReader | None) -> InputTensor:
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
    region = _region(parameters, f"input '{name}'")
    size = parameters.get("binary_data_size")
    if region is not None:
        if regions is None:
            raise InvalidInput("shared-memory inputs are not supported on this route")
        if size is not None or "data" in raw:
            raise InvalidInput(f"input '{name}' is in shared memory and also has data of its own")
        region_name, offset, byte_size = region
        chunk = memoryview(regions.read(region_name, offset, byte_size))
        array = tensor_from_bytes(chunk, datatype, shape, name)
    elif size is not None:
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
        name = entry["name"]
        parameters = _mapping(entry.get("parameters"), f"parameters of output '{name}'")
        binary = parameters.get("binary_data")
        if binary is not None and not isinstance(binary, bool):
            raise InvalidInput(f"output '{name}': binary_data must be a boolean")
        classes = parameters.get("classification", 0)
        if isinstance(classes, bool) or not isinstance(classes, int) or classes < 0:
            raise InvalidInput(f"output '{name}': classification must be a non-negative integer")
        region = _region(parameters, f"output '{name}'")
        if region is not None and classes:
            raise InvalidInput("Output can't set both 'shared_memory_region' and 'classification'")
        if region is not None and binary:
            raise InvalidInput("Output can't set both 'shared_memory_region' and 'binary_data'")
        outputs.append(RequestedOutput(name, binary, classes, region))
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
    depth = 1
    while level and all(isinstance(item, list) for item in level):
        depth += 1
        if depth > MAX_JSON_DEPTH:
            raise InvalidInput(
                f"input '{name}': JSON nesting depth exceeds the maximum allowed limit ({MAX_JSON_DEPTH})"
            )
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
