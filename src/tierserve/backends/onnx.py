"""ONNX Runtime on CPU."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tierserve.datatypes import BY_NAME, Datatype
from tierserve.errors import InvalidInput
from tierserve.repository.signature import Signature, TensorSpec

if TYPE_CHECKING:
    import onnxruntime

_ORT_TYPES: dict[str, str] = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}


@dataclass(frozen=True)
class OnnxOptions:
    intra_op_threads: int = 1
    inter_op_threads: int = 1
    # Spinning intra-op threads burn the core that the HTTP loop needs; measured here, off is faster.
    allow_spinning: bool = False


class OnnxBackend:
    kind = "onnx-cpu"

    def __init__(self, path: Path, options: OnnxOptions) -> None:
        import onnxruntime as ort

        self.path = path
        self.options = options
        session_options = ort.SessionOptions()
        session_options.intra_op_num_threads = options.intra_op_threads
        session_options.inter_op_num_threads = options.inter_op_threads
        session_options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        spinning = "1" if options.allow_spinning else "0"
        session_options.add_session_config_entry("session.intra_op.allow_spinning", spinning)
        session_options.add_session_config_entry("session.inter_op.allow_spinning", spinning)
        try:
            self._session = ort.InferenceSession(
                str(path), session_options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # ORT raises its own exception types for unreadable models
            raise InvalidInput(f"cannot load {path}: {exc}") from exc
        self.signature = Signature(
            inputs=tuple(_spec(arg) for arg in self._session.get_inputs()),
            outputs=tuple(_spec(arg) for arg in self._session.get_outputs()),
        )
        self._output_names = [spec.name for spec in self.signature.outputs]
        self._string_inputs = {spec.name for spec in self.signature.inputs if spec.datatype.kind == "bytes"}

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        for name in self._string_inputs:
            feeds[name] = _to_str_array(feeds[name])
        results = self._session.run(self._output_names, feeds)
        return dict(zip(self._output_names, results, strict=True))

    def available(self) -> bool:
        return True

    def close(self) -> None:
        del self._session


def _spec(arg: onnxruntime.NodeArg) -> TensorSpec:
    try:
        datatype: Datatype = BY_NAME[_ORT_TYPES[arg.type]]
    except KeyError:
        raise InvalidInput(f"tensor '{arg.name}' has unsupported type {arg.type}") from None
    shape: list[Any] = arg.shape or []
    return TensorSpec(
        arg.name, datatype, tuple(dim if isinstance(dim, int) and dim >= 0 else -1 for dim in shape)
    )


def _to_str_array(array: np.ndarray) -> np.ndarray:
    """ONNX Runtime wants text for string tensors (validation already refused non-UTF-8 bytes)."""
    flat = [item.decode("utf-8") if isinstance(item, bytes) else str(item) for item in array.ravel()]
    return np.array(flat, dtype=object).reshape(array.shape)
