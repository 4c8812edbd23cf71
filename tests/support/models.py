"""Test-only ONNX models built with ``onnx.helper``.

``slow`` is a batching model whose run time does not depend on the batch size: it multiplies a
1024x1024 matrix (scaled by the input's sum, so ONNX Runtime cannot fold it into a constant)
``layers`` times and then adds ``r - r`` (exactly zero) to the input. ``Y == X`` row for row, so a
batch of any size takes about as long as one row: requests that wait while one batch runs are
batched together afterwards.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SLOW_WIDTH = 4  # X and Y are FP32 [-1, SLOW_WIDTH]
_IR_VERSION = 8
_OPSET = 17


def build_slow_model(path: Path, *, layers: int = 36, size: int = 1024) -> None:
    """Write the ``slow`` model to ``path`` (about 0.3-1 s per batch on two cores at 36 layers)."""
    weight = numpy_helper.from_array(np.eye(size, dtype=np.float32), "W")
    nodes = [
        helper.make_node("ReduceSum", ["X"], ["s"], keepdims=0),
        helper.make_node("Mul", ["W", "s"], ["m0"]),
    ]
    nodes += [helper.make_node("MatMul", [f"m{i}", "W"], [f"m{i + 1}"]) for i in range(layers)]
    nodes += [
        helper.make_node("ReduceSum", [f"m{layers}"], ["r"], keepdims=0),
        helper.make_node("Sub", ["r", "r"], ["zero"]),
        helper.make_node("Add", ["X", "zero"], ["Y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "slow",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", SLOW_WIDTH])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["batch", SLOW_WIDTH])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", _OPSET)])
    model.ir_version = _IR_VERSION
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())


def write_slow_repository(root: Path, *, name: str = "slow", max_batch_size: int = 16) -> Path:
    """A repository holding only the slow model (``<root>/<name>/1/model.onnx`` + config.yaml)."""
    build_slow_model(root / name / "1" / "model.onnx")
    (root / name / "config.yaml").write_text(f"max_batch_size: {max_batch_size}\n")
    return root
