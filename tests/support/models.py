"""Test-only ONNX models built with ``onnx.helper``.

``slow`` is a batching model whose run time the request chooses: FP32 ``X [-1, 4] -> Y [-1, 4]``
with ``Y == X`` exactly, computed after ``max(X)`` rounds (a ``Loop``) of a 1024x1024 MatMul.
A request whose largest value is ``work`` costs ``work`` rounds, about 10-15 ms each on two cores,
whatever the batch size; zeros cost nothing, so the server's load-time warm-up stays fast. While one
batch runs, requests that arrive queue up and are batched together afterwards.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SLOW_WIDTH = 4  # X and Y are FP32 [-1, SLOW_WIDTH]
SLOW_WORK = 30.0  # a value of X that makes one batch take roughly 0.3-1 s here
_IR_VERSION = 8
_OPSET = 17
_SIZE = 1024


def build_slow_model(path: Path) -> None:
    """Write the ``slow`` model to ``path``."""
    weight = numpy_helper.from_array(np.eye(_SIZE, dtype=np.float32), "W")
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("MatMul", ["m_in", "W"], ["m_out"]),  # W from the outer scope
        ],
        "round",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("m_in", TensorProto.FLOAT, [_SIZE, _SIZE]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("m_out", TensorProto.FLOAT, [_SIZE, _SIZE]),
        ],
    )
    nodes = [
        helper.make_node("ReduceMax", ["X"], ["work"], keepdims=0),
        helper.make_node("Cast", ["work"], ["rounds"], to=TensorProto.INT64),
        helper.make_node("Loop", ["rounds", "", "W"], ["m"], body=body),
        # r - r is exactly 0 for the finite r here (W is the identity), so Y == X bit for bit.
        helper.make_node("ReduceSum", ["m"], ["r"], keepdims=0),
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
    onnx.checker.check_model(model, full_check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())


def slow_input(index: float, *, work: float = SLOW_WORK, rows: int = 1) -> np.ndarray:
    """An X for ``slow``: ``work`` rounds, ``index`` (< work) to tell requests apart."""
    x = np.zeros((rows, SLOW_WIDTH), dtype=np.float32)
    x[:, 0] = work
    x[:, 1] = index
    return x


def write_slow_repository(
    root: Path, *, name: str = "slow", max_batch_size: int = 16, instances: int = 1, extra_config: str = ""
) -> Path:
    """A repository holding only the slow model (``<root>/<name>/1/model.onnx`` + config.yaml), with
    one replica by default so that requests queue behind each other."""
    build_slow_model(root / name / "1" / "model.onnx")
    config = f"max_batch_size: {max_batch_size}\ninstances: {instances}\n{extra_config}"
    (root / name / "config.yaml").write_text(config)
    return root


def build_mlp_model(path: Path, *, width: int = 256, seed: int = 0) -> None:
    """A small float model that int8 quantization handles well: FP32 ``X [-1, width]`` through two
    MatMul layers with a ReLU between to ``Y [-1, 16]``. Weights are seeded, so builds are identical."""
    rng = np.random.default_rng(seed)
    w1 = numpy_helper.from_array(
        (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32), "W1"
    )
    w2 = numpy_helper.from_array((rng.standard_normal((width, 16)) / np.sqrt(width)).astype(np.float32), "W2")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["X", "W1"], ["h"]),
            helper.make_node("Relu", ["h"], ["r"]),
            helper.make_node("MatMul", ["r", "W2"], ["Y"]),
        ],
        "mlp",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["batch", 16])],
        [w1, w2],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", _OPSET)])
    model.ir_version = _IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())
