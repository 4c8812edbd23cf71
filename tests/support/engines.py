"""A small in-process Engine over ``simple`` versions, for tests of the engine and its services."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from tierserve.engine.engine import Engine
from tierserve.examples.basic import build_simple
from tierserve.observability.metrics import Metrics
from tierserve.repository.repository import ModelRepository


@contextlib.contextmanager
def simple_engine(root: Path, versions: tuple[int, ...], config: str) -> Iterator[Engine]:
    """Model ``m`` with ``simple`` as each of ``versions`` and ``config`` as its config.yaml, loaded."""
    for version in versions:
        build_simple(root / "models" / "m" / str(version) / "model.onnx")
    (root / "models" / "m" / "config.yaml").write_text(config)
    engine = Engine(ModelRepository(root / "models"), Metrics(), state_dir=root / "state")
    engine.load_all()
    try:
        yield engine
    finally:
        engine.stop()
