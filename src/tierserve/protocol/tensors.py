"""Tensors in Open Inference Protocol bodies, the part every direction shares: a request's inputs
and a response's outputs are the same JSON entries (``name``, ``datatype``, ``shape``, then ``data``
or ``parameters.binary_data_size``), whoever writes or reads them. The server reads requests and
writes responses with it (``codec``); the client side (``client``, the remote backend) writes
requests and reads responses with it.

A binary body is a JSON header of ``Inference-Header-Content-Length`` bytes followed by the raw
tensors, in entry order, of every entry whose ``parameters.binary_data_size`` is set (``wire``
holds the byte layout). As in Triton: ``NaN``, ``Infinity`` and ``-Infinity`` are JSON tokens both
ways (a ``null`` would read back as NaN for all three); BYTES ``data`` nests at most
``MAX_JSON_DEPTH`` arrays deep; a tensor may live in a registered shared-memory region
(``shared_memory_region``, ``shared_memory_byte_size``, ``shared_memory_offset``).
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
from tierserve.errors import InvalidInput
from tierserve.wire import as_bytes, tensor_from_bytes, tensor_to_bytes

HEADER_LENGTH = "inference-header-content-length"
MAX_JSON_DEPTH = 100  # Triton's HTTP_MAX_JSON_NESTING_DEPTH for BYTES data
MAX_DIMS = 32  # NumPy 1.x holds no more (2.x: 64)
JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY
_NON_FINITE = re.compile(rb"NaN|Infinity")


class SharedMemoryReader(Protocol):
    def read(self, name: str, offset: int, size: int) -> bytes: ...


# -- a whole body ----------------------------------------------------------------------------------


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """The JSON header and the binary part after it."""
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


def join_body(header: bytes, blobs: list[bytes]) -> tuple[bytes, dict[str, str]]:
    """The body and its headers: JSON alone, or JSON followed by the binary tensors."""
    if not blobs:
        return header, {"content-type": "application/json"}
    return b"".join([header, *blobs]), {
        "content-type": "application/octet-stream",
        HEADER_LENGTH: str(len(header)),
    }


def loads(text: bytes, what: str) -> Any:
    """A JSON document that may hold Triton's NaN and Infinity tokens (``what``: request, response)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        if not _NON_FINITE.search(text):
            raise InvalidInput(f"failed to parse the {what} JSON: {exc}") from None
    # Triton's parser takes NaN and infinities; orjson refuses them and Python's json reads them.
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise InvalidInput(f"failed to parse the {what} JSON: {exc}") from None


def dumps_with_tokens(doc: dict[str, Any], tensors: str) -> bytes:
    """``doc`` as JSON; float data of the entries in ``doc[tensors]`` that holds NaN or infinities
    is written with Triton's tokens (orjson would write ``null``; in numeric data every ``null``
    stands for the next non-finite value, in order)."""
    entries = doc[tensors]
    non_finite = {
        index: data
        for index, entry in enumerate(entries)
        if isinstance(data := entry.get("data"), np.ndarray)
        and data.dtype.kind == "f"
        and not np.isfinite(data).all()
    }
    if not non_finite:
        return orjson.dumps(doc, option=JSON_OPTIONS)
    parts = [orjson.dumps({k: v for k, v in doc.items() if k != tensors})[:-1], b',"%s":[' % tensors.encode()]
    for index, entry in enumerate(entries):
        if index:
            parts.append(b",")
        data = non_finite.get(index)
        if data is None:
            parts.append(orjson.dumps(entry, option=JSON_OPTIONS))
            continue
        text = orjson.dumps({k: v for k, v in entry.items() if k != "data"}, option=JSON_OPTIONS)
        pieces = orjson.dumps(data, option=JSON_OPTIONS).split(b"null")
        values = data[~np.isfinite(data)]
        tokens = [b"NaN" if math.isnan(v) else b"Infinity" if v > 0 else b"-Infinity" for v in values]
        joined = [pieces[0]]
        for token, piece in zip(tokens, pieces[1:], strict=True):
            joined += [token, piece]
        parts += [text[:-1], b',"data":', *joined, b"}"]
    parts.append(b"]}")
    return b"".join(parts)


class BinaryReader:
    """The binary part of a body, taken tensor by tensor in entry order."""

    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)
        self._offset = 0

    def take(self, size: int, label: str) -> memoryview:
        end = self._offset + size
        if size < 0 or end > len(self._data):
            raise InvalidInput(
                f"{label} declares binary_data_size {size}, but only "
                f"{len(self._data) - self._offset} bytes of binary data remain"
            )
        chunk = self._data[self._offset : end]
        self._offset = end
        return chunk

    def finish(self, kind: str) -> None:
        extra = len(self._data) - self._offset
        if extra:
            raise InvalidInput(f"{extra} bytes of binary data follow the {kind}s and belong to none of them")


# -- one tensor --------------------------------------------------------------------------------------


def encode_tensor(
    name: str, datatype: Datatype, array: np.ndarray, *, binary: bool, blobs: list[bytes]
) -> dict[str, Any]:
    """A tensor's JSON entry. With ``binary`` its bytes go to ``blobs`` (Triton's binary extension)
    and the entry says how many; otherwise the entry carries ``data`` (float data as an array, so
    that ``dumps_with_tokens`` can write NaN and infinities)."""
    entry: dict[str, Any] = {"name": name, "datatype": datatype.name, "shape": list(array.shape)}
    if binary:
        blob = tensor_to_bytes(array, datatype)
        entry["parameters"] = {"binary_data_size": len(blob)}
        blobs.append(blob)
    else:
        entry["data"] = to_json_data(array, datatype)
    return entry


def decode_tensor(
    raw: object, reader: BinaryReader, regions: SharedMemoryReader | None, kind: str
) -> tuple[str, Datatype, np.ndarray]:
    """An entry's name, datatype and array, from its ``data``, the binary part or shared memory
    (``kind``: input or output, for the messages)."""
    if not isinstance(raw, dict):
        raise InvalidInput(f"each {kind} must be a JSON object")
    name = raw.get("name")
    if not isinstance(name, str):
        raise InvalidInput(f"each {kind} needs a string 'name'")
    label = f"{kind} '{name}'"
    datatype_name = raw.get("datatype")
    if not isinstance(datatype_name, str):
        raise InvalidInput(f"{label} needs a string 'datatype'")
    datatype = from_name(datatype_name)
    shape = _shape(raw.get("shape"), label)
    parameters = mapping(raw.get("parameters"), f"parameters of {label}")
    place = region(parameters, label)
    size = parameters.get("binary_data_size")
    if place is not None:
        if regions is None:
            raise InvalidInput(f"shared-memory {kind}s are not supported on this route")
        if size is not None or "data" in raw:
            raise InvalidInput(f"{label} is in shared memory and also has data of its own")
        region_name, offset, byte_size = place
        chunk = memoryview(regions.read(region_name, offset, byte_size))
        array = tensor_from_bytes(chunk, datatype, shape, name)
    elif size is not None:
        if isinstance(size, bool) or not isinstance(size, int):
            raise InvalidInput(f"{label}: binary_data_size must be an integer")
        if "data" in raw:
            raise InvalidInput(f"{label} has both 'data' and binary_data_size")
        array = tensor_from_bytes(reader.take(size, label), datatype, shape, name)
    elif "data" in raw:
        array = from_json_data(raw["data"], datatype, shape, label)
    else:
        raise InvalidInput(f"{label} has neither 'data' nor binary_data_size")
    return name, datatype, array


def mapping(value: object, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput(f"{what} must be a JSON object")
    return value


def region(parameters: Mapping[str, Any], what: str) -> tuple[str, int, int] | None:
    """``(region, offset, byte_size)`` when the tensor lives in shared memory."""
    name = parameters.get("shared_memory_region")
    if name is None:
        return None
    if not isinstance(name, str):
        raise InvalidInput(f"{what}: shared_memory_region must be a string")
    size = _non_negative(parameters.get("shared_memory_byte_size"), f"{what}: shared_memory_byte_size")
    offset = _non_negative(parameters.get("shared_memory_offset", 0), f"{what}: shared_memory_offset")
    return name, offset, size


def _non_negative(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInput(f"{what} must be a non-negative integer")
    return value


def _shape(raw: object, label: str) -> tuple[int, ...]:
    if not isinstance(raw, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in raw
    ):
        raise InvalidInput(f"{label} needs 'shape', a list of non-negative integers")
    if len(raw) > MAX_DIMS:
        raise InvalidInput(f"{label}: a shape has at most {MAX_DIMS} dimensions, got {len(raw)}")
    # numpy refuses an array whose extent (zero dimensions aside) overflows 63 bits, even when empty.
    if math.prod(max(d, 1) for d in raw) >= 2**58:
        raise InvalidInput(f"{label}: shape {raw} is larger than any tensor can be")
    return tuple(raw)


# -- tensor data as JSON -------------------------------------------------------------------------------


def from_json_data(data: object, datatype: Datatype, shape: tuple[int, ...], label: str) -> np.ndarray:
    count = math.prod(shape)
    if not isinstance(data, list):
        data = [data]
    if datatype.kind == "bytes":
        flat = _flatten_strings(data, label)
        array = np.empty(len(flat), dtype=object)
        array[:] = flat
    else:
        array = _numbers(data, datatype, label)
    if array.size != count:
        raise InvalidInput(f"{label}: {array.size} values for shape {list(shape)} ({count} expected)")
    return array.reshape(shape)


def to_json_data(array: np.ndarray, datatype: Datatype) -> Any:
    """Flat JSON values: numbers as a contiguous array (orjson writes it), BYTES as text (bytes that
    are not UTF-8 are replaced, as Triton does)."""
    if datatype.kind == "bytes":
        return [as_bytes(item).decode("utf-8", "replace") for item in array.ravel()]
    if datatype.name == "FP16":
        return array.astype(np.float32).ravel()
    return np.ascontiguousarray(array).ravel()


_ACCEPTED_KINDS = {"int": "iu", "uint": "iu", "float": "iuf", "bool": "b"}


def _numbers(data: list[Any], datatype: Datatype, label: str) -> np.ndarray:
    try:
        parsed = np.asarray(data)
    except (ValueError, OverflowError) as exc:
        raise InvalidInput(f"{label}: 'data' is not a regular array of numbers ({exc})") from None
    if parsed.size == 0:
        return parsed.astype(datatype.numpy).ravel()
    if parsed.dtype.kind not in _ACCEPTED_KINDS[datatype.kind]:
        raise InvalidInput(
            f"{label}: 'data' holds {_describe(parsed.dtype)}, "
            f"which is not valid for datatype {datatype.name}"
        )
    if datatype.kind in ("int", "uint"):
        info = np.iinfo(datatype.numpy)  # type: ignore[type-var]
        if parsed.min() < info.min or parsed.max() > info.max:
            raise InvalidInput(f"{label}: values out of range for {datatype.name}")
    converted = parsed.astype(datatype.numpy, copy=False).ravel()
    if datatype.kind == "float" and not np.isfinite(converted).all() and np.isfinite(parsed).all():
        raise InvalidInput(f"{label}: values out of range for {datatype.name}")
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


def _flatten_strings(data: list[Any], label: str) -> list[bytes]:
    """Flatten nested string lists row-major, refusing ragged nesting as numeric data does."""
    level: list[Any] = data
    depth = 1
    while level and all(isinstance(item, list) for item in level):
        depth += 1
        if depth > MAX_JSON_DEPTH:
            raise InvalidInput(
                f"{label}: JSON nesting depth exceeds the maximum allowed limit ({MAX_JSON_DEPTH})"
            )
        if len({len(item) for item in level}) != 1:
            raise InvalidInput(f"{label}: nested 'data' is ragged")
        level = [x for item in level for x in item]
    for item in level:
        if isinstance(item, list):
            raise InvalidInput(f"{label}: nested 'data' is ragged")
        if not isinstance(item, str):
            raise InvalidInput(f"{label}: BYTES data must be strings, got {type(item).__name__}")
    return [item.encode() for item in level]
