"""Checks a decoded request against the model's signature and builds the backend feeds."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

import numpy as np

from tierserve.engine.request import InferRequest
from tierserve.errors import InvalidInput
from tierserve.repository.signature import Signature, TensorSpec, shape_matches


@dataclass(frozen=True)
class Prepared:
    feeds: dict[str, np.ndarray]
    rows: int  # batch rows this request occupies (1 for models that do not batch)
    batch_key: Hashable  # requests with equal keys can share a batch
    outputs: list[tuple[TensorSpec, bool]]  # requested outputs and whether each is binary


def prepare(signature: Signature, max_batch_size: int, request: InferRequest, model: str) -> Prepared:
    feeds: dict[str, np.ndarray] = {}
    for tensor in request.inputs:
        spec = signature.input(tensor.name)
        if spec is None:
            known = ", ".join(s.name for s in signature.inputs)
            raise InvalidInput(
                f"unexpected inference input '{tensor.name}' for model '{model}'; expected inputs: {known}"
            )
        if tensor.name in feeds:
            raise InvalidInput(f"input '{tensor.name}' is given more than once")
        if tensor.datatype is not spec.datatype:
            raise InvalidInput(
                f"input '{tensor.name}' has datatype {tensor.datatype.name}; "
                f"model '{model}' expects {spec.datatype.name}"
            )
        if not shape_matches(spec.shape, tensor.array.shape):
            raise InvalidInput(
                f"input '{tensor.name}' has shape {list(tensor.array.shape)}; "
                f"model '{model}' expects {list(spec.shape)} (-1: any size)"
            )
        if spec.datatype.kind == "bytes":
            _require_utf8(tensor.name, tensor.array)
        feeds[tensor.name] = tensor.array
    missing = [spec.name for spec in signature.inputs if spec.name not in feeds]
    if missing:
        raise InvalidInput(f"model '{model}' expects inputs {missing} that the request does not give")
    rows = _rows(feeds, max_batch_size, model)
    batch_key = tuple(array.shape[1:] for array in feeds.values()) if max_batch_size else None
    return Prepared(feeds, rows, batch_key, _outputs(signature, request, model))


def _rows(feeds: dict[str, np.ndarray], max_batch_size: int, model: str) -> int:
    if not max_batch_size:
        return 1
    sizes = {array.shape[0] for array in feeds.values()}
    if len(sizes) != 1:
        raise InvalidInput(f"inputs disagree on the batch size (first dimension): {sorted(sizes)}")
    (rows,) = sizes
    if not 1 <= rows <= max_batch_size:
        raise InvalidInput(f"batch size {rows} is outside 1..{max_batch_size} for model '{model}'")
    return int(rows)


def _outputs(signature: Signature, request: InferRequest, model: str) -> list[tuple[TensorSpec, bool]]:
    if request.outputs is None:
        return [(spec, request.binary_output) for spec in signature.outputs]
    chosen: list[tuple[TensorSpec, bool]] = []
    if len({wanted.name for wanted in request.outputs}) != len(request.outputs):
        raise InvalidInput("an output is requested more than once")
    for wanted in request.outputs:
        spec = signature.output(wanted.name)
        if spec is None:
            known = ", ".join(s.name for s in signature.outputs)
            raise InvalidInput(
                f"unexpected inference output '{wanted.name}' for model '{model}'; expected outputs: {known}"
            )
        chosen.append((spec, request.binary_output if wanted.binary is None else wanted.binary))
    return chosen


def _require_utf8(name: str, array: np.ndarray) -> None:
    """ONNX Runtime string tensors carry text: bytes that are not UTF-8 cannot reach the model."""
    for item in array.ravel():
        if isinstance(item, bytes):
            try:
                item.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidInput(
                    f"input '{name}': BYTES element is not valid UTF-8, which this model's "
                    "string tensors require"
                ) from None
