"""Open Inference Protocol datatypes and their NumPy / ONNX / Triton equivalents."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tierserve.errors import InvalidInput


@dataclass(frozen=True)
class Datatype:
    name: str  # the V2 name, e.g. "FP32"
    numpy: np.dtype[np.generic]
    onnx: int  # onnx.TensorProto enum value
    kind: str  # "int", "uint", "float", "bool", "bytes"

    @property
    def itemsize(self) -> int:
        """Bytes per element in the binary extension; 0 for variable-length BYTES."""
        return 0 if self.kind == "bytes" else self.numpy.itemsize

    @property
    def triton_name(self) -> str:
        return "TYPE_STRING" if self.name == "BYTES" else f"TYPE_{self.name}"


# onnx.TensorProto values, written out so that importing this module does not import onnx.
_TABLE = [
    Datatype("BOOL", np.dtype(np.bool_), 9, "bool"),
    Datatype("UINT8", np.dtype(np.uint8), 2, "uint"),
    Datatype("UINT16", np.dtype(np.uint16), 4, "uint"),
    Datatype("UINT32", np.dtype(np.uint32), 12, "uint"),
    Datatype("UINT64", np.dtype(np.uint64), 13, "uint"),
    Datatype("INT8", np.dtype(np.int8), 3, "int"),
    Datatype("INT16", np.dtype(np.int16), 5, "int"),
    Datatype("INT32", np.dtype(np.int32), 6, "int"),
    Datatype("INT64", np.dtype(np.int64), 7, "int"),
    Datatype("FP16", np.dtype(np.float16), 10, "float"),
    Datatype("FP32", np.dtype(np.float32), 1, "float"),
    Datatype("FP64", np.dtype(np.float64), 11, "float"),
    Datatype("BYTES", np.dtype(np.object_), 8, "bytes"),
]

BY_NAME: dict[str, Datatype] = {d.name: d for d in _TABLE}
BY_ONNX: dict[int, Datatype] = {d.onnx: d for d in _TABLE}
BYTES = BY_NAME["BYTES"]


def from_name(name: str) -> Datatype:
    try:
        return BY_NAME[name]
    except KeyError:
        known = ", ".join(BY_NAME)
        raise InvalidInput(f"unsupported datatype '{name}'; expected one of {known}") from None


def from_numpy(dtype: np.dtype[np.generic]) -> Datatype:
    if dtype.kind in "OSU":
        return BYTES
    for d in _TABLE:
        if d.numpy == dtype:
            return d
    raise InvalidInput(f"no protocol datatype for numpy dtype {dtype}")
