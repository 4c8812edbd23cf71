"""Inference messages to the engine's request and back.

Inputs come either as ``raw_input_contents`` (one bytes entry per input, in input order, laid out
as in the binary tensor extension: little-endian values; BYTES elements each a 4-byte length and the
bytes) or as typed ``contents`` (``fp32_contents`` and the like). Outputs always go back as
``raw_output_contents``, as Triton answers: the fast form for both sides.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from tierserve.datatypes import Datatype, from_name
from tierserve.engine.request import InferRequest, InferResponse, InputTensor, RequestedOutput
from tierserve.errors import InvalidInput
from tierserve.grpc_api import messages
from tierserve.wire import tensor_from_bytes, tensor_to_bytes

# The typed field that carries each datatype (FP16 and BF16 travel only as raw bytes, as in Triton).
_CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def parameter_value(parameter: Any) -> Any:
    """The Python value of one ``InferParameter`` (None when it holds nothing)."""
    which = parameter.WhichOneof("parameter_choice")
    return None if which is None else getattr(parameter, which)


def parameters(mapping: Any) -> dict[str, Any]:
    return {key: parameter_value(value) for key, value in mapping.items()}


def decode_request(message: Any) -> InferRequest:
    """A ``ModelInferRequest`` as the engine's request; raises InvalidInput with a clear message."""
    if not message.inputs:
        raise InvalidInput("request must have at least one input")
    raw = message.raw_input_contents
    if raw and len(raw) != len(message.inputs):
        raise InvalidInput(
            f"raw_input_contents holds {len(raw)} entries for {len(message.inputs)} inputs; "
            "send every input's data raw, or none"
        )
    inputs = [
        _decode_input(tensor, raw[index] if raw else None) for index, tensor in enumerate(message.inputs)
    ]
    request_parameters = parameters(message.parameters) if message.parameters else {}
    outputs = None
    if message.outputs:
        outputs = []
        for output in message.outputs:
            if "shared_memory_region" in output.parameters:
                raise InvalidInput("shared-memory outputs are not supported over gRPC; REST has them")
            classes = (
                parameter_value(output.parameters["classification"])
                if "classification" in output.parameters
                else 0
            )
            if isinstance(classes, bool) or not isinstance(classes, int) or classes < 0:
                raise InvalidInput(f"output '{output.name}': classification must be a non-negative integer")
            outputs.append(RequestedOutput(output.name, classification=classes))
    return InferRequest(
        inputs=inputs,
        id=message.id or None,
        outputs=outputs,
        parameters=request_parameters,
    )


def _decode_input(tensor: Any, raw: bytes | None) -> InputTensor:
    name = tensor.name
    if not name:
        raise InvalidInput("each input needs a name")
    datatype = from_name(tensor.datatype)
    shape = tuple(tensor.shape)
    if any(dim < 0 for dim in shape):
        raise InvalidInput(f"input '{name}': shape {list(shape)} has a negative dimension")
    if tensor.parameters and "shared_memory_region" in tensor.parameters:
        raise InvalidInput("shared-memory inputs are not supported over gRPC; REST has them")
    if raw is not None:
        if tensor.HasField("contents"):
            raise InvalidInput(f"input '{name}' has both typed contents and raw_input_contents")
        return InputTensor(name, datatype, tensor_from_bytes(memoryview(raw), datatype, shape, name))
    return InputTensor(name, datatype, _from_contents(tensor.contents, datatype, shape, name))


def _from_contents(contents: Any, datatype: Datatype, shape: tuple[int, ...], name: str) -> np.ndarray:
    field = _CONTENTS_FIELD.get(datatype.name)
    if field is None:
        raise InvalidInput(f"input '{name}': {datatype.name} data must be sent in raw_input_contents")
    values = getattr(contents, field)
    count = math.prod(shape)
    if len(values) != count:
        raise InvalidInput(
            f"input '{name}': {len(values)} values in {field} for shape {list(shape)} ({count} expected)"
        )
    if datatype.kind == "bytes":
        array = np.empty(count, dtype=object)
        array[:] = list(values)
        return array.reshape(shape)
    if datatype.kind in ("int", "uint") and datatype.numpy.itemsize < 4 and count:
        wide = np.fromiter(values, dtype=np.int64, count=count)
        info = np.iinfo(datatype.numpy)  # type: ignore[type-var]
        if wide.min() < info.min or wide.max() > info.max:
            raise InvalidInput(f"input '{name}': values out of range for {datatype.name}")
        return wide.astype(datatype.numpy).reshape(shape)
    return np.fromiter(values, dtype=datatype.numpy, count=count).reshape(shape)


def encode_response(response: InferResponse) -> Any:
    """The engine's response as a ``ModelInferResponse`` with raw output contents."""
    message = messages.ModelInferResponse(
        model_name=response.model_name,
        model_version=response.model_version,
        id=response.id or "",
        raw_output_contents=[tensor_to_bytes(t.array, t.datatype) for t in response.outputs],
    )
    for tensor in response.outputs:
        message.outputs.add(name=tensor.name, datatype=tensor.datatype.name, shape=tensor.array.shape)
    return message
