"""``torch-cuda``: the ONNX model converted with onnx2torch and run on a CUDA device.

Optional: needs the ``torch`` extra (``pip install 'tierserve[torch]'``) and a CUDA device. Nothing
here is imported unless a ``torch-cuda`` pool is configured or detected, so importing tierserve never
imports torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tierserve.errors import InvalidInput
from tierserve.repository.signature import Signature


class TorchCudaBackend:
    kind = "torch-cuda"

    def __init__(self, path: Path, signature: Signature, device: str = "cuda:0") -> None:
        try:
            import onnx
            import torch
            from onnx2torch import convert
        except ImportError as exc:
            raise InvalidInput(f"torch-cuda pool needs the torch extra and onnx2torch: {exc}") from exc
        if not torch.cuda.is_available():
            raise InvalidInput("torch-cuda pool: PyTorch sees no CUDA device")
        self._torch: Any = torch
        self._device = torch.device(device)
        self._module = convert(onnx.load(str(path))).to(self._device).eval()
        self.signature = signature
        self._input_names = [spec.name for spec in signature.inputs]
        self._output_names = [spec.name for spec in signature.outputs]

    def available(self) -> bool:
        return True

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        with torch.inference_mode():
            args = [
                torch.from_numpy(np.ascontiguousarray(feeds[n])).to(self._device) for n in self._input_names
            ]
            result = self._module(*args)
            results = result if isinstance(result, tuple | list) else [result]
            return {
                name: t.detach().cpu().numpy() for name, t in zip(self._output_names, results, strict=True)
            }

    def close(self) -> None:
        del self._module
        self._torch.cuda.empty_cache()
