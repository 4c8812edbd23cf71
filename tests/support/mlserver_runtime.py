"""A minimal MLServer custom runtime that serves one ONNX model with ONNX Runtime on the CPU.

Runs only inside MLServer's own virtualenv (``scripts/mlserver-env.sh``), where ``support.mlserver``
points a ``model-settings.json`` at it::

    {"name": "mlp", "implementation": "mlserver_runtime.OnnxModel",
     "parameters": {"uri": "/abs/path/model.onnx"}}

One session, one intra-op thread, no spinning. Inputs are decoded by hand from the V2 request
(flat ``data`` + ``shape`` + ``datatype``) and outputs encoded the same way, with the shapes and
datatypes ONNX Runtime returns (MLServer's ``NumpyCodec`` would add a batch dimension to 1-D outputs).

Import-safe anywhere: outside MLServer's environment the base class is a stand-in and the module
imports nothing else, so collecting or importing ``tests/support`` in tierserve's venv costs nothing.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

try:
    from mlserver import MLModel
except ImportError:  # tierserve's own venv: this class is never instantiated there

    class MLModel:  # type: ignore[no-redef]
        pass


if TYPE_CHECKING:
    import numpy as np
    from mlserver.types import InferenceRequest, InferenceResponse

# V2 datatype -> numpy dtype name; BYTES travels as Python objects (str for ONNX Runtime).
_NUMPY = {
    "BOOL": "bool",
    "UINT8": "uint8",
    "UINT16": "uint16",
    "UINT32": "uint32",
    "UINT64": "uint64",
    "INT8": "int8",
    "INT16": "int16",
    "INT32": "int32",
    "INT64": "int64",
    "FP16": "float16",
    "FP32": "float32",
    "FP64": "float64",
    "BYTES": "object",
}
_DATATYPE = {numpy: v2 for v2, numpy in _NUMPY.items()}


class OnnxModel(MLModel):
    """``parameters.uri``: the ``model.onnx`` file (absolute, or relative to model-settings.json)."""

    async def load(self) -> bool:
        import onnxruntime as ort
        from mlserver.utils import get_model_uri

        path = await get_model_uri(self.settings, wellknown_filenames=["model.onnx"])
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        self._session = ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])
        self._input_names = [i.name for i in self._session.get_inputs()]
        self._output_names = [o.name for o in self._session.get_outputs()]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        from mlserver.errors import InferenceError
        from mlserver.types import InferenceResponse

        feeds = {inp.name: _decode(inp) for inp in payload.inputs}
        if sorted(feeds) != sorted(self._input_names):
            raise InferenceError(f"expected inputs {self._input_names}, got {sorted(feeds)}")
        wanted = [o.name for o in payload.outputs or []] or self._output_names
        unknown = sorted(set(wanted) - set(self._output_names))
        if unknown:
            raise InferenceError(f"unknown outputs {unknown}; the model has {self._output_names}")
        try:  # off the event loop: ONNX Runtime releases the GIL while it runs
            results = await asyncio.get_running_loop().run_in_executor(None, self._session.run, wanted, feeds)
        except Exception as exc:  # ONNX Runtime's errors (bad shape, dtype) are the client's
            raise InferenceError(f"onnxruntime: {exc}") from exc
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            outputs=[_encode(name, array) for name, array in zip(wanted, results, strict=True)],
        )


def _decode(inp: Any) -> np.ndarray:
    import numpy as np
    from mlserver.errors import InferenceError

    datatype = str(getattr(inp.datatype, "value", inp.datatype))
    if datatype not in _NUMPY:
        raise InferenceError(f"input '{inp.name}': unsupported datatype {datatype}")
    data = getattr(inp.data, "root", inp.data)
    if datatype == "BYTES":
        items = [x.decode() if isinstance(x, bytes) else str(x) for x in data]
        array = np.array(items, dtype=object)
    else:
        array = np.asarray(data, dtype=_NUMPY[datatype])
    try:
        return array.reshape(inp.shape)
    except ValueError as exc:
        raise InferenceError(f"input '{inp.name}': {array.size} values for shape {inp.shape}") from exc


def _encode(name: str, array: np.ndarray) -> Any:
    import numpy as np
    from mlserver.types import ResponseOutput

    array = np.asarray(array)
    datatype = _DATATYPE.get(array.dtype.name)
    if datatype is None:  # numpy str/bytes arrays
        datatype, array = "BYTES", array.astype(object)
    data = array.ravel().tolist()
    if datatype == "BYTES":
        data = [x.decode() if isinstance(x, bytes) else str(x) for x in data]
    return ResponseOutput(name=name, shape=list(array.shape), datatype=datatype, data=data)
