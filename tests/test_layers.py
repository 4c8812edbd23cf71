"""The package's layers (DESIGN.md) as contracts: import-linter reads them from pyproject.toml and
fails on any import, lazy ones included, that runs upwards or pulls I/O into pure policy."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parents[1]


def test_the_layer_contracts_hold() -> None:
    assert lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True) == 0


def test_importing_the_server_loads_no_torch_ray_or_cuda_library() -> None:
    code = (
        "import sys, tierserve, tierserve.cli, tierserve.api.app, tierserve.engine.engine\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'torch', 'ray', 'onnx2torch', 'pynvml', 'tensorrt', 'cupy'})\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
