"""Triton's raw binary request: ``Inference-Header-Content-Length: 0`` and the body is one input's bytes.

The request has no JSON header, so its metadata comes from the model (as in Triton):

1. the model has exactly one input;
2. a non-BYTES input has at most one variable-sized dimension besides the batch dimension, and its
   size follows from the body's length (``len(body) / itemsize / product of the fixed dims``);
3. a BYTES input has shape ``[1]``: the whole body is its single element (no length prefix);
4. a batching model gets a batch of one row;
5. every output is returned, in binary form.

Example: ``identity_fp32`` (``[-1, -1]``, batching) and a 32-byte body is an FP32 input ``[1, 8]``.
"""

from __future__ import annotations

import math

import numpy as np

from tierserve.datatypes import Datatype
from tierserve.engine.request import InferRequest, InputTensor
from tierserve.errors import InvalidInput
from tierserve.repository.signature import Signature
from tierserve.wire import tensor_from_bytes


def decode_raw_request(body: bytes, signature: Signature, max_batch_size: int, model: str) -> InferRequest:
    if len(signature.inputs) != 1:
        raise InvalidInput(
            f"Raw request must only have 1 input (found 1) to be deduced but got "
            f"{len(signature.inputs)} inputs in '{model}' model"
        )
    (spec,) = signature.inputs
    dims = list(spec.shape[1:] if max_batch_size else spec.shape)
    if spec.datatype.kind == "bytes":
        if len(dims) != 1 or dims[0] not in (1, -1):
            raise InvalidInput(
                f"For BYTE datatype raw input '{spec.name}', the model must have input shape [1]"
            )
        shape = [1, 1] if max_batch_size else [1]
        array = np.empty(1, dtype=object)
        array[0] = body
        return _request(spec.name, spec.datatype, array.reshape(shape))
    variable = [index for index, dim in enumerate(dims) if dim < 0]
    if len(variable) > 1:
        raise InvalidInput(
            f"The shape of the raw input '{spec.name}' can not be deduced because there are more "
            "than one variable-sized dimension"
        )
    itemsize = spec.datatype.itemsize
    fixed = math.prod(dim for dim in dims if dim >= 0)
    if len(body) % itemsize or (fixed and (len(body) // itemsize) % fixed):
        raise InvalidInput(
            f"raw input '{spec.name}': {len(body)} bytes do not fill whole {spec.datatype.name} "
            f"elements of shape {dims}"
        )
    if variable:
        dims[variable[0]] = len(body) // itemsize // fixed if fixed else 0
    full = (1, *dims) if max_batch_size else tuple(dims)
    array = tensor_from_bytes(memoryview(body), spec.datatype, full, spec.name)
    return _request(spec.name, spec.datatype, array)


def _request(name: str, datatype: Datatype, array: np.ndarray) -> InferRequest:
    return InferRequest(inputs=[InputTensor(name, datatype, array)], binary_output=True)
