"""A backend seen through the inputs and outputs a Triton configuration declares.

Rules (checked once, at load):

1. A declared tensor names a tensor of the graph, with the graph's data type.
2. The shape the model takes or gives is ``reshape`` when declared, else ``dims``; with the batch
   dimension in front for a batching model it must fit the graph's shape (same rank; each dimension
   equal, or -1 on either side).
3. Clients see ``dims`` (after a -1 batch dimension when batching): metadata, the config route and
   request validation use that shape, so declared dims narrower than the graph's are enforced.
4. With ``reshape``, each request row is reshaped to it on the way in, and each output row from it
   to ``dims`` on the way out (Triton's ``reshape { shape: [ ] }`` makes rows of scalars).
5. Tensors the configuration does not declare keep the graph's shape, as do declarations without
   ``dims`` or ``data_type`` for what they leave out (Triton completes those from the model).

Example: a graph input ``[-1]`` declared ``dims: [1] reshape { shape: [] }`` in a batching model
takes client tensors ``[rows, 1]`` and feeds the model ``[rows]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from tierserve.backends.base import Backend
from tierserve.datatypes import BY_NAME
from tierserve.errors import InvalidInput
from tierserve.repository.config import DeclaredTensor, ModelConfig
from tierserve.repository.signature import Signature, TensorSpec


class DeclaredView:
    """The client-facing signature, and the per-row shapes to reshape to (by tensor name)."""

    def __init__(self, graph: Signature, config: ModelConfig, batching: bool, model: str) -> None:
        self.batching = batching
        self.feed_shapes: dict[str, tuple[int, ...]] = {}  # input -> row shape the model takes
        self.output_shapes: dict[str, tuple[int, ...]] = {}  # output -> row shape clients get
        inputs = _apply(
            graph.inputs, config.inputs, batching, model, "input", self.feed_shapes, to_model=True
        )
        outputs = _apply(
            graph.outputs, config.outputs, batching, model, "output", self.output_shapes, to_model=False
        )
        self.signature = Signature(inputs, outputs)

    def wrap(self, backends: Sequence[Backend]) -> list[Backend]:
        return [DeclaredBackend(backend, self) for backend in backends]


def _apply(
    specs: tuple[TensorSpec, ...],
    declared: tuple[DeclaredTensor, ...],
    batching: bool,
    model: str,
    kind: str,
    reshapes: dict[str, tuple[int, ...]],
    *,
    to_model: bool,
) -> tuple[TensorSpec, ...]:
    by_name = {spec.name: spec for spec in specs}
    unknown = [tensor.name for tensor in declared if tensor.name not in by_name]
    if unknown:
        raise InvalidInput(
            f"model '{model}': configured {kind}s {unknown} are not in the graph, whose {kind}s are "
            f"{list(by_name)}"
        )
    views = dict(by_name)
    prefix: tuple[int, ...] = (-1,) if batching else ()
    for tensor in declared:
        spec = by_name[tensor.name]
        if tensor.datatype is not None and BY_NAME[tensor.datatype] is not spec.datatype:
            raise InvalidInput(
                f"model '{model}': {kind} '{tensor.name}' is configured as {tensor.datatype}, but the "
                f"graph has {spec.datatype.name}"
            )
        if tensor.dims is None:
            continue  # the graph's shape (and it has the graph's data type, or was just checked)
        model_shape = prefix + (tensor.reshape if tensor.reshape is not None else tensor.dims)
        if not _fits(model_shape, spec.shape):
            raise InvalidInput(
                f"model '{model}': {kind} '{tensor.name}' configured with shape {list(model_shape)} "
                f"(batch dimension included), but the graph has {list(spec.shape)}"
            )
        if tensor.reshape is not None:
            fixed = all(d >= 0 for d in tensor.dims + tensor.reshape)
            if fixed and math.prod(tensor.dims) != math.prod(tensor.reshape):
                raise InvalidInput(
                    f"model '{model}': {kind} '{tensor.name}': dims {list(tensor.dims)} and reshape "
                    f"{list(tensor.reshape)} hold different numbers of elements"
                )
            reshapes[tensor.name] = tensor.reshape if to_model else tensor.dims
        views[tensor.name] = TensorSpec(spec.name, spec.datatype, prefix + tensor.dims)
    return tuple(views[spec.name] for spec in specs)


def _fits(declared: tuple[int, ...], graph: tuple[int, ...]) -> bool:
    return len(declared) == len(graph) and all(
        d == g or -1 in (d, g) for d, g in zip(declared, graph, strict=True)
    )


class DeclaredBackend:
    """``inner`` with the declared view's signature; reshapes rows in and out where declared."""

    def __init__(self, inner: Backend, view: DeclaredView) -> None:
        self.inner = inner
        self.view = view
        self.kind = inner.kind
        self.signature = view.signature

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        view = self.view
        if view.feed_shapes:
            feeds = {
                name: _reshape(array, view.feed_shapes.get(name), view.batching)
                for name, array in feeds.items()
            }
        outputs = self.inner.run(feeds)
        if view.output_shapes:
            outputs = {
                name: _reshape(array, view.output_shapes.get(name), view.batching)
                for name, array in outputs.items()
            }
        return outputs

    def available(self) -> bool:
        return self.inner.available()

    def close(self) -> None:
        self.inner.close()


def _reshape(array: np.ndarray, row_shape: tuple[int, ...] | None, batching: bool) -> np.ndarray:
    if row_shape is None:
        return array
    shape = (array.shape[0], *row_shape) if batching else row_shape
    try:
        return array.reshape(shape)
    except ValueError:
        raise InvalidInput(
            f"a tensor of shape {list(array.shape)} cannot be reshaped to {list(shape)}"
        ) from None
