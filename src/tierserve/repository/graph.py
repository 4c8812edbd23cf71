"""A model's signature read from its ONNX file, without building an inference session.

The graph's declared inputs (less the initializers an older exporter lists as inputs too, which
ONNX Runtime does not ask for) and outputs, with their element types and shapes: a dimension with a
fixed size keeps it, a named or unknown one is -1. This is what ONNX Runtime's ``get_inputs()`` /
``get_outputs()`` report for the same file (``tests/repository/test_graph.py`` checks that).

Only the parts of the file that say this are parsed: the protobuf fields of ``ModelProto.graph``
are walked on a memory map, the inputs and outputs (small ``ValueInfoProto`` messages) are parsed
with the ``onnx`` package, initializers only for their names, and the weights are skipped over
without being read. Measured on all-minilm-l6-v2 (90 MB) here: ``onnx.load`` took 150-175 ms and a
session 230-360 ms; this took 0.5-5 ms (the onnx import aside) and allocates nothing the size of
the weights.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tierserve.datatypes import BY_ONNX
from tierserve.errors import InvalidInput
from tierserve.repository.signature import Signature, TensorSpec

# Field numbers of onnx.proto (stable since ONNX 1.0).
_MODEL_GRAPH = 7
_GRAPH_INITIALIZER, _GRAPH_INPUT, _GRAPH_OUTPUT, _GRAPH_SPARSE_INITIALIZER = 5, 11, 12, 15
_TENSOR_NAME = 8
_SPARSE_VALUES = 1
_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5


def read_signature(path: Path) -> Signature:
    """The inputs and outputs of the ONNX model at ``path``; InvalidInput when it cannot be read or
    a tensor has a type the protocol cannot carry."""
    try:
        with path.open("rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            inputs, outputs, initializers = _graph_parts(buf)
        return Signature(
            inputs=tuple(spec for spec in map(_spec, inputs) if spec.name not in initializers),
            outputs=tuple(_spec(raw) for raw in outputs),
        )
    except InvalidInput:
        raise
    except Exception as exc:  # unreadable, empty, not a protobuf message (protobuf's DecodeError too)
        raise InvalidInput(f"cannot load {path}: {exc}") from exc


def _graph_parts(buf: mmap.mmap) -> tuple[list[bytes], list[bytes], set[str]]:
    """The serialized inputs and outputs of the model's graph, and the names of its initializers."""
    graph = None
    for field, wire, start, end in _fields(buf, 0, len(buf)):
        if field == _MODEL_GRAPH and wire == _LENGTH:
            graph = (start, end)  # a repeated singular field: the last one wins, as in protobuf
    if graph is None:
        raise ValueError("the file holds no ONNX graph")
    inputs: list[bytes] = []
    outputs: list[bytes] = []
    initializers: set[str] = set()
    for field, wire, start, end in _fields(buf, *graph):
        if wire != _LENGTH:
            continue
        if field == _GRAPH_INPUT:
            inputs.append(buf[start:end])
        elif field == _GRAPH_OUTPUT:
            outputs.append(buf[start:end])
        elif field == _GRAPH_INITIALIZER:
            initializers.add(_tensor_name(buf, start, end))
        elif field == _GRAPH_SPARSE_INITIALIZER:
            for inner, inner_wire, s, e in _fields(buf, start, end):
                if inner == _SPARSE_VALUES and inner_wire == _LENGTH:
                    initializers.add(_tensor_name(buf, s, e))
    return inputs, outputs, initializers


def _tensor_name(buf: mmap.mmap, start: int, end: int) -> str:
    name = ""
    for field, wire, s, e in _fields(buf, start, end):
        if field == _TENSOR_NAME and wire == _LENGTH:
            name = buf[s:e].decode("utf-8")
    return name


def _fields(buf: mmap.mmap, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """(field number, wire type, value start, value end) of each field of the message in
    ``buf[start:end]``; a length-delimited value is skipped over, never read."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos, end)
        field, wire = key >> 3, key & 7
        if wire == _VARINT:
            _, after = _varint(buf, pos, end)
        elif wire == _FIXED64:
            after = pos + 8
        elif wire == _LENGTH:
            length, pos = _varint(buf, pos, end)
            after = pos + length
        elif wire == _FIXED32:
            after = pos + 4
        else:
            raise ValueError(f"not an ONNX model (protobuf wire type {wire} at byte {pos})")
        if after > end or field == 0:
            raise ValueError(f"not an ONNX model (a field runs past its message at byte {pos})")
        yield field, wire, pos, after
        pos = after


def _varint(buf: mmap.mmap, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise ValueError(f"not an ONNX model (a malformed number at byte {pos})")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _spec(raw: bytes) -> TensorSpec:
    import onnx  # only here: importing tierserve does not import onnx

    value: Any = onnx.ValueInfoProto.FromString(raw)
    kind = value.type.WhichOneof("value")
    if kind != "tensor_type":
        raise InvalidInput(f"tensor '{value.name}' has unsupported type {kind}")
    tensor = value.type.tensor_type
    datatype = BY_ONNX.get(tensor.elem_type)
    if datatype is None:
        try:
            name = onnx.TensorProto.DataType.Name(tensor.elem_type).lower()
        except ValueError:
            name = str(tensor.elem_type)
        raise InvalidInput(f"tensor '{value.name}' has unsupported type tensor({name})")
    dims = tensor.shape.dim if tensor.HasField("shape") else ()
    shape = tuple(dim.dim_value if dim.HasField("dim_value") and dim.dim_value >= 0 else -1 for dim in dims)
    return TensorSpec(value.name, datatype, shape)
