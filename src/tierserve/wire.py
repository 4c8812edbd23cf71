"""Tensors on the wire in Triton's binary tensor data extension (shared by server and client side).

Fixed-size datatypes are raw little-endian bytes; BYTES elements are each a 4-byte little-endian
length followed by the bytes.
"""

from __future__ import annotations

import math
import struct

import numpy as np

from tierserve.datatypes import Datatype
from tierserve.errors import InvalidInput


def tensor_from_bytes(chunk: memoryview, datatype: Datatype, shape: tuple[int, ...], name: str) -> np.ndarray:
    count = math.prod(shape)
    if datatype.kind == "bytes":
        return _deserialize_bytes(chunk, count, name).reshape(shape)
    expected = count * datatype.itemsize
    if len(chunk) != expected:
        raise InvalidInput(
            f"input '{name}': binary_data_size is {len(chunk)} bytes, but shape {list(shape)} "
            f"of {datatype.name} needs {expected}"
        )
    array = np.frombuffer(chunk, dtype=datatype.numpy.newbyteorder("<"))
    if datatype.kind == "bool" and array.size and array.view(np.uint8).max() > 1:
        raise InvalidInput(f"input '{name}': BOOL bytes must be 0 or 1")
    return array.reshape(shape)


def _deserialize_bytes(chunk: memoryview, count: int, name: str) -> np.ndarray:
    items: list[bytes] = []
    offset, end = 0, len(chunk)
    while offset < end:
        if offset + 4 > end:
            raise InvalidInput(f"input '{name}': truncated BYTES element length")
        (length,) = struct.unpack_from("<I", chunk, offset)
        offset += 4
        if offset + length > end:
            raise InvalidInput(f"input '{name}': BYTES element of {length} bytes runs past the data")
        items.append(bytes(chunk[offset : offset + length]))
        offset += length
    if len(items) != count:
        raise InvalidInput(f"input '{name}': {len(items)} BYTES elements for a shape of {count}")
    array = np.empty(count, dtype=object)
    array[:] = items
    return array


def tensor_to_bytes(array: np.ndarray, datatype: Datatype) -> bytes:
    if datatype.kind != "bytes":
        return np.ascontiguousarray(array, dtype=datatype.numpy.newbyteorder("<")).tobytes()
    parts: list[bytes] = []
    for item in array.ravel():
        encoded = as_bytes(item)
        parts.append(struct.pack("<I", len(encoded)))
        parts.append(encoded)
    return b"".join(parts)


def as_bytes(item: object) -> bytes:
    if isinstance(item, bytes):
        return item
    return str(item).encode("utf-8", "surrogateescape")
