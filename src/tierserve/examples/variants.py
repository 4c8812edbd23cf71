"""Versions of ``simple`` for rollout tests and benchmarks: same signature and answers, plus extra
work or deterministic failures, built with ``onnx.helper``.

``extra_rounds``: every request runs that many rounds of a 128x128 float MatMul (a ``Loop`` whose
start depends on the input, so ONNX Runtime cannot fold it away at load); the outputs are exact.
``fail_every``: a request whose ``INPUT0[:, 0] mod fail_every == fail_every - 1`` fails in ONNX
Runtime (a ``Gather`` out of its table's bounds), so a client choosing ``INPUT0[0, 0] = i`` for its
i-th request sees exactly one failure in ``fail_every``. Example::

    build_simple_variant(repo / "canary" / "2" / "model.onnx", extra_rounds=40)
    build_simple_variant(repo / "canary" / "3" / "model.onnx", fail_every=50)   # 2% fail
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from tierserve.examples.basic import _model, save

_WORK_SIZE = 128


def build_simple_variant(path: Path, *, extra_rounds: int = 0, fail_every: int = 0) -> None:
    """``simple`` (OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1) with extra work or failures."""
    shape: list[int | str] = ["batch", 16]
    nodes = [
        helper.make_node("Add", ["INPUT0", "INPUT1"], ["sum"]),
        helper.make_node("Sub", ["INPUT0", "INPUT1"], ["difference"]),
        # zero: an int32 scalar 0 that depends on the input (nothing here folds at load time)
        helper.make_node("ReduceMin", ["INPUT0"], ["smallest"], keepdims=0),
        helper.make_node("Sub", ["smallest", "smallest"], ["zero"]),
    ]
    initializers = []
    extra = "zero"
    if extra_rounds > 0:
        initializers += [
            numpy_helper.from_array(np.eye(_WORK_SIZE, dtype=np.float32) * 0.5, "W"),
            numpy_helper.from_array(np.array(extra_rounds, dtype=np.int64), "rounds"),
        ]
        body = helper.make_graph(
            [
                helper.make_node("Identity", ["cond_in"], ["cond_out"]),
                helper.make_node("MatMul", ["m_in", "W"], ["m_out"]),
            ],
            "round",
            [
                helper.make_tensor_value_info("i", TensorProto.INT64, []),
                helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
                helper.make_tensor_value_info("m_in", TensorProto.FLOAT, [_WORK_SIZE, _WORK_SIZE]),
            ],
            [
                helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
                helper.make_tensor_value_info("m_out", TensorProto.FLOAT, [_WORK_SIZE, _WORK_SIZE]),
            ],
        )
        nodes += [
            helper.make_node("Cast", ["zero"], ["zero_f"], to=TensorProto.FLOAT),
            helper.make_node("Add", ["W", "zero_f"], ["start"]),
            helper.make_node("Loop", ["rounds", "", "start"], ["worked"], body=body),
            helper.make_node("ReduceSum", ["worked"], ["total"], keepdims=0),
            helper.make_node("Sub", ["total", "total"], ["nil_f"]),  # exactly 0: finite values only
            helper.make_node("Cast", ["nil_f"], ["nil_work"], to=TensorProto.INT32),
            helper.make_node("Add", [extra, "nil_work"], ["zero_w"]),
        ]
        extra = "zero_w"
    if fail_every > 0:
        initializers += [
            numpy_helper.from_array(np.zeros(fail_every - 1, dtype=np.int32), "table"),
            numpy_helper.from_array(np.array([fail_every], dtype=np.int32), "modulus"),
            numpy_helper.from_array(np.array([0], dtype=np.int64), "first"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "one"),
        ]
        nodes += [
            helper.make_node("Slice", ["INPUT0", "first", "one", "one"], ["key"]),  # INPUT0[:, 0:1]
            helper.make_node("Mod", ["key", "modulus"], ["slot"]),  # in [0, fail_every)
            helper.make_node(
                "Gather", ["table", "slot"], ["looked_up"]
            ),  # slot fail_every - 1: out of bounds
            helper.make_node("ReduceSum", ["looked_up"], ["nil_fail"], keepdims=0),
            helper.make_node("Add", [extra, "nil_fail"], ["zero_f2"]),
        ]
        extra = "zero_f2"
    nodes += [
        helper.make_node("Add", ["sum", extra], ["OUTPUT0"]),
        helper.make_node("Add", ["difference", extra], ["OUTPUT1"]),
    ]
    graph = helper.make_graph(
        nodes,
        "simple_variant",
        [helper.make_tensor_value_info(n, TensorProto.INT32, shape) for n in ("INPUT0", "INPUT1")],
        [helper.make_tensor_value_info(n, TensorProto.INT32, shape) for n in ("OUTPUT0", "OUTPUT1")],
        initializers,
    )
    save(_model(graph), path)
