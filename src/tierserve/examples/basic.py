"""Small ONNX models built with ``onnx.helper``: Triton's ``simple``, ``simple_string`` and
``identity_<dtype>``."""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import TensorProto, helper

# Pinned so that every build is byte-identical and loads on older ONNX Runtime releases too.
IR_VERSION = 8
OPSET = 17

IDENTITY_DTYPES: dict[str, int] = {
    "fp32": TensorProto.FLOAT,
    "fp16": TensorProto.FLOAT16,
    "fp64": TensorProto.DOUBLE,
    "int8": TensorProto.INT8,
    "int32": TensorProto.INT32,
    "int64": TensorProto.INT64,
    "uint8": TensorProto.UINT8,
    "bool": TensorProto.BOOL,
    "bytes": TensorProto.STRING,
}


def save(model: onnx.ModelProto, path: Path) -> None:
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString(deterministic=True))


def _model(graph: onnx.GraphProto) -> onnx.ModelProto:
    model = helper.make_model(
        graph, producer_name="tierserve", opset_imports=[helper.make_opsetid("", OPSET)]
    )
    model.ir_version = IR_VERSION
    return model


def build_simple(path: Path) -> None:
    """Triton's classic example: OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1, INT32 [-1, 16]."""
    shape: list[int | str] = ["batch", 16]
    graph = helper.make_graph(
        [
            helper.make_node("Add", ["INPUT0", "INPUT1"], ["OUTPUT0"]),
            helper.make_node("Sub", ["INPUT0", "INPUT1"], ["OUTPUT1"]),
        ],
        "simple",
        [helper.make_tensor_value_info(n, TensorProto.INT32, shape) for n in ("INPUT0", "INPUT1")],
        [helper.make_tensor_value_info(n, TensorProto.INT32, shape) for n in ("OUTPUT0", "OUTPUT1")],
    )
    save(_model(graph), path)


def build_simple_string(path: Path) -> None:
    """Triton's ``simple_string``: ``simple`` on BYTES [-1, 16] holding decimal integers (as text)."""
    shape: list[int | str] = ["batch", 16]
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["INPUT0"], ["A"], to=TensorProto.INT32),
            helper.make_node("Cast", ["INPUT1"], ["B"], to=TensorProto.INT32),
            helper.make_node("Add", ["A", "B"], ["SUM"]),
            helper.make_node("Sub", ["A", "B"], ["DIFF"]),
            helper.make_node("Cast", ["SUM"], ["OUTPUT0"], to=TensorProto.STRING),
            helper.make_node("Cast", ["DIFF"], ["OUTPUT1"], to=TensorProto.STRING),
        ],
        "simple_string",
        [helper.make_tensor_value_info(n, TensorProto.STRING, shape) for n in ("INPUT0", "INPUT1")],
        [helper.make_tensor_value_info(n, TensorProto.STRING, shape) for n in ("OUTPUT0", "OUTPUT1")],
    )
    save(_model(graph), path)


def build_identity(path: Path, elem_type: int) -> None:
    """OUTPUT0 = INPUT0 for any [-1, -1] tensor of one element type."""
    shape: list[int | str] = ["batch", "length"]
    graph = helper.make_graph(
        [helper.make_node("Identity", ["INPUT0"], ["OUTPUT0"])],
        "identity",
        [helper.make_tensor_value_info("INPUT0", elem_type, shape)],
        [helper.make_tensor_value_info("OUTPUT0", elem_type, shape)],
    )
    save(_model(graph), path)
