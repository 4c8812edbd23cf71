"""State metrics read from the engine at scrape time (the integration suite checks them over HTTP)."""

from __future__ import annotations

import sys
from types import SimpleNamespace
from typing import Any

from tierserve.engine.health import GpuMetrics
from tierserve.engine.pools import PoolSpec


def test_without_a_gpu_pool_nothing_of_nvml_is_loaded_or_exported() -> None:
    engine: Any = SimpleNamespace(pools=[PoolSpec("cpu", "onnx-cpu"), PoolSpec("int8", "onnx-cpu-int8")])
    assert list(GpuMetrics(engine).collect()) == []
    assert "pynvml" not in sys.modules
