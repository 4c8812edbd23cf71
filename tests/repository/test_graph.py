"""Signatures read from the ONNX file agree with what an ONNX Runtime session reports for it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tierserve.backends.onnx import OnnxBackend, OnnxOptions
from tierserve.datatypes import BY_ONNX
from tierserve.errors import InvalidInput
from tierserve.examples.basic import build_identity, build_simple, build_simple_string, save
from tierserve.examples.crossencoder import build_cross_encoder
from tierserve.repository.graph import read_signature
from tierserve.repository.repository import ModelRepository


def _session_signature(path: Path) -> object:
    backend = OnnxBackend(path, OnnxOptions())
    try:
        return backend.signature
    finally:
        backend.close()


def test_every_example_model_reads_as_its_session_sees_it(tmp_path: Path) -> None:
    paths = [tmp_path / "simple.onnx", tmp_path / "string.onnx", tmp_path / "cross.onnx"]
    build_simple(paths[0])
    build_simple_string(paths[1])
    build_cross_encoder(paths[2], vocab_size=128)
    for elem_type in BY_ONNX:
        path = tmp_path / f"identity_{elem_type}.onnx"
        build_identity(path, elem_type)
        paths.append(path)
    for path in paths:
        assert read_signature(path) == _session_signature(path), path.name


def test_initializers_listed_as_inputs_are_not_inputs_and_dims_become_minus_one(tmp_path: Path) -> None:
    # Older exporters list every weight among the graph inputs too; a session does not ask for them.
    weight = numpy_helper.from_array(np.ones((4, 3), dtype=np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["X", "W"], ["Y"])],
        "old-style",
        [
            helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", 4]),
            helper.make_tensor_value_info("W", TensorProto.FLOAT, [4, 3]),
        ],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, 3])],
        initializer=[weight],
    )
    path = tmp_path / "old.onnx"
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
    signature = read_signature(path)
    assert [spec.name for spec in signature.inputs] == ["X"]
    assert signature.inputs[0].shape == (-1, 4) and signature.outputs[0].shape == (-1, 3)
    assert signature.batchable
    assert signature == _session_signature(path)


def test_a_type_the_protocol_cannot_carry_is_refused_by_name(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["X"], ["Y"])],
        "bf16",
        [helper.make_tensor_value_info("X", TensorProto.BFLOAT16, [2])],
        [helper.make_tensor_value_info("Y", TensorProto.BFLOAT16, [2])],
    )
    path = tmp_path / "bf16.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
    with pytest.raises(InvalidInput, match=r"tensor 'X' has unsupported type tensor\(bfloat16\)"):
        read_signature(path)


def test_an_unreadable_file_is_invalid_input(tmp_path: Path) -> None:
    path = tmp_path / "broken.onnx"
    path.write_bytes(b"\x08\x07not a model at all\xff\xff")
    with pytest.raises(InvalidInput, match="cannot load"):
        read_signature(path)


def test_the_repository_gives_a_versions_signature(tmp_path: Path) -> None:
    build_simple(tmp_path / "simple" / "3" / "model.onnx")
    signature = ModelRepository(tmp_path).signature("simple", 3)
    assert [spec.name for spec in signature.inputs] == ["INPUT0", "INPUT1"]
    assert [spec.name for spec in signature.outputs] == ["OUTPUT0", "OUTPUT1"]
