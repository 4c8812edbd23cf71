"""A cached answer: the output tensors of one successful inference, and their bytes in Redis.

Arrays are copied out of the batch they came from (so an entry does not pin a whole batch's
buffer) and made read-only, since every hit hands the same arrays to a response. The Redis form
is the tensors in Triton's binary layout (``tierserve.wire``) behind a small header::

    b"TSC1" | count u32 | per output: name (u16 length + UTF-8), datatype (u8 + ASCII),
    ndim u8, shape (i64 each), data (u64 length + bytes)
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from tierserve.cache.key import sizes
from tierserve.datatypes import Datatype, from_name
from tierserve.engine.request import InferRequest, InferResponse, OutputTensor
from tierserve.errors import TierserveError
from tierserve.wire import tensor_from_bytes, tensor_to_bytes

MAGIC = b"TSC1"


class CorruptEntry(ValueError):
    """Bytes in Redis that are not an answer this code wrote (another version, or damage)."""


@dataclass(frozen=True)
class Answer:
    outputs: tuple[tuple[str, Datatype, np.ndarray], ...]  # in the order the model gave them
    nbytes: int

    @classmethod
    def of(cls, response: InferResponse, *, copy: bool = True) -> Answer:
        """The answer in ``response``; ``copy=False`` shares its arrays (for an answer that is only
        handed to single-flight followers, never stored)."""
        outputs = []
        for tensor in response.outputs:
            array = tensor.array
            if copy:
                array = np.array(array, copy=True)
                array.flags.writeable = False
            outputs.append((tensor.name, tensor.datatype, array))
        return cls(tuple(outputs), sizes(a for _, _, a in outputs))

    def response(self, request: InferRequest, model: str, version: int) -> InferResponse:
        """The answer as the response to ``request`` (its id, its output order and encodings)."""
        by_name = {name: (datatype, array) for name, datatype, array in self.outputs}
        if request.outputs is None:
            chosen = [(name, request.binary_output) for name, _, _ in self.outputs]
        else:
            chosen = [
                (w.name, request.binary_output if w.binary is None else w.binary) for w in request.outputs
            ]
        tensors = []
        for name, binary in chosen:
            datatype, array = by_name[name]
            tensors.append(OutputTensor(name, datatype, array, binary))
        return InferResponse(model_name=model, model_version=str(version), outputs=tensors, id=request.id)

    def encode(self) -> bytes:
        parts = [MAGIC, struct.pack("<I", len(self.outputs))]
        for name, datatype, array in self.outputs:
            raw_name = name.encode()
            parts.append(struct.pack("<H", len(raw_name)) + raw_name)
            parts.append(struct.pack("<B", len(datatype.name)) + datatype.name.encode())
            parts.append(struct.pack(f"<B{array.ndim}q", array.ndim, *array.shape))
            data = tensor_to_bytes(array, datatype)
            parts.append(struct.pack("<Q", len(data)))
            parts.append(data)
        return b"".join(parts)

    @classmethod
    def decode(cls, raw: bytes) -> Answer:
        try:
            return cls._decode(memoryview(raw))
        except (struct.error, TierserveError, UnicodeDecodeError, ValueError) as exc:
            raise CorruptEntry(str(exc)) from exc

    @classmethod
    def _decode(cls, view: memoryview) -> Answer:
        if bytes(view[:4]) != MAGIC:
            raise CorruptEntry("not a tierserve cache entry")
        (count,) = struct.unpack_from("<I", view, 4)
        offset = 8
        outputs = []
        for _ in range(count):
            (length,) = struct.unpack_from("<H", view, offset)
            name = bytes(view[offset + 2 : offset + 2 + length]).decode()
            offset += 2 + length
            (length,) = struct.unpack_from("<B", view, offset)
            datatype = from_name(bytes(view[offset + 1 : offset + 1 + length]).decode())
            offset += 1 + length
            (ndim,) = struct.unpack_from("<B", view, offset)
            shape = struct.unpack_from(f"<{ndim}q", view, offset + 1)
            offset += 1 + 8 * ndim
            (length,) = struct.unpack_from("<Q", view, offset)
            offset += 8
            if offset + length > len(view):
                raise CorruptEntry("truncated tensor data")
            array = tensor_from_bytes(view[offset : offset + length], datatype, tuple(shape), name)
            offset += length
            array.flags.writeable = False
            outputs.append((name, datatype, array))
        if offset != len(view):
            raise CorruptEntry("trailing bytes")
        return cls(tuple(outputs), sizes(a for _, _, a in outputs))
