"""The cache key of an inference request: pure, no I/O.

Two requests share a key exactly when the model would give them the same answer and the first
caller may see the second's answer. The key hashes (BLAKE2b, 256 bits: collision resistant, and
faster than SHA-256 in CPython) every one of these, each length-prefixed so that no two field
lists serialise alike:

1. the scope: the caller's tenant, or ``*`` for a model declared ``shared`` (answers never cross
   tenants otherwise);
2. the model, its version, the fingerprint of the weights the version was loaded from and the
   generation (bumped on every load, reload and unload, on every server: see ``generations``);
3. the precision class of the answer (``exact``; ``approx`` for answers that an int8 variant may
   have given, which only tiers that accept approximate results may read);
4. every input, in name order: name, datatype, shape and bytes (JSON and binary encodings of the
   same tensor give the same bytes, so they share a key);
5. the requested outputs (names, sorted; none named: all) and every request parameter that may
   change the answer: all of them except those listed in ``NEUTRAL_PARAMETERS``.

Example::

    prefix = KeyPrefix.of(scope="acme", model="m", version=1, fingerprint=b"...", generation=3)
    key = request_key(prefix, request)          # bytes, 32 of them
    key_for(key, "exact")                       # the key of its exact-precision answer
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from tierserve.engine.request import InferRequest

DIGEST_BYTES = 32
EXACT = "exact"
APPROX = "approx"

# Parameters that change where, when or how an answer is delivered, never what it is.
NEUTRAL_PARAMETERS = frozenset({"tier", "priority", "timeout", "binary_data_output", "cache"})
# Parameters of stateful (sequence) models: the answer depends on earlier requests, so never cached.
SEQUENCE_PARAMETERS = frozenset({"sequence_id", "sequence_start", "sequence_end"})

# Inputs larger than this are not keyed (served uncached): hashing runs on the event loop, and
# 4 MiB takes about 6 ms here. Images and batches of sentences are far below it.
MAX_KEYED_INPUT_BYTES = 4 << 20

_LEN = struct.Struct("<Q")


def _field(h: Any, data: bytes | memoryview) -> None:
    h.update(_LEN.pack(len(data)))
    h.update(data)


@dataclass(frozen=True)
class KeyPrefix:
    """The part of the key fixed by who asks and which model version answers."""

    digest: bytes

    @classmethod
    def of(cls, *, scope: str, model: str, version: int, fingerprint: bytes, generation: int) -> KeyPrefix:
        h = hashlib.blake2b(digest_size=DIGEST_BYTES, person=b"tierserve-key")
        for part in (
            scope.encode(),
            model.encode(),
            str(version).encode(),
            fingerprint,
            str(generation).encode(),
        ):
            _field(h, part)
        return cls(h.digest())


def cacheable(request: InferRequest) -> bool:
    """False for requests whose answer must not come from (or go to) a cache: sequence requests,
    and those that say ``"cache": false``."""
    params = request.parameters
    if not params:
        return True
    if params.get("cache") is False:
        return False
    return not any(params.get(name) for name in SEQUENCE_PARAMETERS)


def input_bytes(request: InferRequest) -> int:
    """Bytes the key would hash (BYTES tensors counted at 8 per element: a cheap lower bound)."""
    return sum(tensor.array.nbytes for tensor in request.inputs)


def request_key(prefix: KeyPrefix, request: InferRequest) -> bytes:
    """The key of ``request``'s answer, before its precision class (see ``key_for``)."""
    h = hashlib.blake2b(prefix.digest, digest_size=DIGEST_BYTES)
    inputs = sorted(request.inputs, key=lambda t: t.name)
    h.update(_LEN.pack(len(inputs)))
    for tensor in inputs:
        _field(h, tensor.name.encode())
        _field(h, tensor.datatype.name.encode())
        shape = tensor.array.shape
        h.update(_LEN.pack(len(shape)))
        h.update(struct.pack(f"<{len(shape)}q", *shape))
        _tensor_bytes(h, tensor.array)
    if request.outputs is None:
        h.update(b"\x00")
    else:
        h.update(b"\x01")
        names = sorted(wanted.name for wanted in request.outputs)
        h.update(_LEN.pack(len(names)))
        for name in names:
            _field(h, name.encode())
    _field(h, _parameters(request.parameters))
    return h.digest()


def key_for(request_digest: bytes, precision: str) -> bytes:
    """The key of the answer of ``precision`` class (``EXACT`` or ``APPROX``) to a request."""
    return hashlib.blake2b(request_digest + precision.encode(), digest_size=DIGEST_BYTES).digest()


def _tensor_bytes(h: Any, array: np.ndarray) -> None:
    if array.dtype == np.object_:  # BYTES: each element length-prefixed
        items = array.ravel()
        h.update(_LEN.pack(len(items)))
        for item in items:
            _field(h, item if isinstance(item, bytes) else str(item).encode("utf-8", "surrogateescape"))
        return
    data = np.ascontiguousarray(array)
    if data.dtype.byteorder == ">":
        data = data.astype(data.dtype.newbyteorder("<"))
    _field(h, data.reshape(-1).view(np.uint8).data)


def _parameters(parameters: Mapping[str, Any]) -> bytes:
    relevant = {k: v for k, v in parameters.items() if k not in NEUTRAL_PARAMETERS}
    if not relevant:
        return b""
    return orjson.dumps(relevant, option=orjson.OPT_SORT_KEYS)


def sizes(arrays: Iterable[np.ndarray]) -> int:
    """Bytes an answer's arrays hold (BYTES elements counted by their length)."""
    total = 0
    for array in arrays:
        if array.dtype == np.object_:
            total += sum(len(x) if isinstance(x, bytes | str) else 8 for x in array.ravel()) + 8 * array.size
        else:
            total += array.nbytes
    return total
