"""Declared inputs and outputs (config.pbtxt) over a graph's signature, with reshape."""

from __future__ import annotations

import numpy as np
import pytest

from tierserve.backends.declared import DeclaredView
from tierserve.datatypes import BY_NAME
from tierserve.errors import InvalidInput
from tierserve.repository.config import DeclaredTensor, ModelConfig
from tierserve.repository.signature import Signature, TensorSpec

FP32 = BY_NAME["FP32"]
GRAPH = Signature((TensorSpec("x", FP32, (-1, -1)),), (TensorSpec("y", FP32, (-1, -1)),))


class _Doubling:
    kind = "fake"
    signature = GRAPH

    def __init__(self) -> None:
        self.seen: list[tuple[int, ...]] = []

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.seen.append(feeds["x"].shape)
        return {"y": feeds["x"] * 2}

    def available(self) -> bool:
        return True

    def close(self) -> None:
        pass


def _config(*inputs: DeclaredTensor, outputs: tuple[DeclaredTensor, ...] = ()) -> ModelConfig:
    return ModelConfig(inputs=inputs, outputs=outputs)


def test_dims_narrow_what_clients_may_send() -> None:
    view = DeclaredView(GRAPH, _config(DeclaredTensor("x", "FP32", (16,))), True, "m")
    assert view.signature.inputs[0].shape == (-1, 16)
    assert view.signature.outputs == GRAPH.outputs  # undeclared: as the graph says


def test_reshape_rows_in_and_out() -> None:
    config = _config(
        DeclaredTensor("x", "FP32", (2, 2), (4,)), outputs=(DeclaredTensor("y", "FP32", (2, 2), (4,)),)
    )
    inner = _Doubling()
    view = DeclaredView(GRAPH, config, True, "m")
    (backend,) = view.wrap([inner])
    assert backend.signature.inputs[0].shape == (-1, 2, 2)
    result = backend.run({"x": np.arange(8, dtype=np.float32).reshape(2, 2, 2)})
    assert inner.seen == [(2, 4)]
    np.testing.assert_array_equal(result["y"], np.arange(8, dtype=np.float32).reshape(2, 2, 2) * 2)


@pytest.mark.parametrize(
    "declared, message",
    [
        (DeclaredTensor("z", "FP32", (1,)), "not in the graph"),
        (DeclaredTensor("x", "INT32", (1,)), "configured as INT32, but the graph has FP32"),
        (DeclaredTensor("x", "FP32", (1, 2)), "configured with shape \\[-1, 1, 2\\]"),
        (DeclaredTensor("x", "FP32", (2, 2), (3,)), "hold different numbers of elements"),
    ],
)
def test_declarations_that_do_not_fit_the_graph_fail_the_load(declared: DeclaredTensor, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        DeclaredView(GRAPH, _config(declared), True, "m")


def test_a_partial_declaration_keeps_what_it_leaves_out() -> None:
    view = DeclaredView(
        GRAPH,
        _config(DeclaredTensor("x", None, (3,)), outputs=(DeclaredTensor("y", "FP32", None),)),
        True,
        "m",
    )
    assert view.signature.inputs[0] == TensorSpec("x", FP32, (-1, 3))
    assert view.signature.outputs == GRAPH.outputs
    with pytest.raises(InvalidInput, match="configured as INT32"):
        DeclaredView(GRAPH, _config(DeclaredTensor("x", "INT32", None)), True, "m")
