"""The client's directions of the Open Inference Protocol codec: a request from NumPy arrays, the
arrays of a response. The remote backend sends its batches to peers (tierserve, Triton, KServe,
MLServer) with them; the tensor entries are read and written by ``tensors``, as the server's own
directions (``codec``) read and write them. Example::

    body, headers = encode_request([("X", FP32, x)], binary=True)
    outputs = decode_response(answer.content, answer.headers.get(HEADER_LENGTH))   # {"Y": array}
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import orjson

from tierserve.datatypes import Datatype
from tierserve.errors import InvalidInput
from tierserve.protocol.tensors import (
    JSON_OPTIONS,
    BinaryReader,
    decode_tensor,
    encode_tensor,
    join_body,
    loads,
    split_body,
)


class NotJson(ValueError):
    """A tensor that JSON tensors would change on the way. Peers without the binary extension
    (MLServer) parse JSON with orjson, which refuses Triton's ``NaN``/``Infinity`` tokens, so the
    client writes plain JSON: NaN becomes ``null`` (read back as NaN), but an infinity would too;
    and bytes that are not UTF-8 have no JSON string."""


def encode_request(
    inputs: Iterable[tuple[str, Datatype, np.ndarray]], *, binary: bool
) -> tuple[bytes, dict[str, str]]:
    """A V2 infer request for ``(name, datatype, array)`` inputs; binary tensors (and binary outputs
    asked for) when ``binary``, else plain JSON tensors (raises NotJson for what they cannot carry)."""
    entries: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name, datatype, array in inputs:
        if not binary:
            _check_json(name, datatype, array)
        entries.append(encode_tensor(name, datatype, array, binary=binary, blobs=blobs))
    doc = {"inputs": entries, "parameters": {"binary_data_output": binary}}
    return join_body(orjson.dumps(doc, option=JSON_OPTIONS), blobs)


def decode_response(body: bytes, header_length: str | None) -> dict[str, np.ndarray]:
    """The outputs of a V2 infer response, JSON or binary, by name; InvalidInput when the body is
    not one (the caller decides whose fault that is)."""
    json_part, binary = split_body(body, header_length)
    doc = loads(json_part, "response")
    if not isinstance(doc, dict):
        raise InvalidInput("the response body must be a JSON object")
    raw_outputs = doc.get("outputs", [])
    if not isinstance(raw_outputs, list):
        raise InvalidInput("the response's 'outputs' must be an array")
    reader = BinaryReader(binary)
    outputs: dict[str, np.ndarray] = {}
    for raw in raw_outputs:
        name, _, array = decode_tensor(raw, reader, None, "output")
        outputs[name] = array
    reader.finish("output")
    return outputs


def _check_json(name: str, datatype: Datatype, array: np.ndarray) -> None:
    if datatype.kind == "float" and np.isinf(array).any():
        raise NotJson(f"input '{name}' holds infinities, which JSON tensors cannot carry")
    if datatype.kind == "bytes":
        try:
            for item in array.ravel():
                if isinstance(item, bytes):
                    item.decode()
        except UnicodeDecodeError:
            raise NotJson(f"input '{name}' holds bytes that are not UTF-8 text") from None
