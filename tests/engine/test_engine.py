"""The engine's loading rules on a real repository and real backends (no server needed)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tierserve.engine.engine import Engine
from tierserve.engine.pools import PoolSpec
from tierserve.errors import InvalidInput
from tierserve.examples.basic import build_simple
from tierserve.observability.metrics import Metrics
from tierserve.repository.repository import ModelRepository


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    (root / "simple" / "1").mkdir(parents=True)
    build_simple(root / "simple" / "1" / "model.onnx")
    return root


def _engine(repo: Path, tmp_path: Path, pools: list[PoolSpec]) -> Engine:
    return Engine(ModelRepository(repo), Metrics(), pools=pools, state_dir=tmp_path / "state")


def test_a_pool_whose_backend_cannot_be_built_leaves_the_others_serving(repo: Path, tmp_path: Path) -> None:
    # A torch-cuda pool on a machine without CUDA (or without the torch extra) cannot build its
    # backend: the model serves on the CPU pool, and its metadata says why the other pool is missing.
    engine = _engine(repo, tmp_path, [PoolSpec("cpu", "onnx-cpu"), PoolSpec("gpu", "torch-cuda")])
    try:
        engine.load_all()
        deployment = engine.deployment("simple")
        assert list(deployment.runners) == ["cpu"]
        assert deployment.variants["gpu"].accepted is False
        assert "torch" in (deployment.variants["gpu"].error or "").lower()
        assert engine.ready
    finally:
        engine.stop()


def test_no_pool_at_all_fails_the_model_with_every_reason(repo: Path, tmp_path: Path) -> None:
    engine = _engine(repo, tmp_path, [PoolSpec("gpu", "torch-cuda")])
    try:
        engine.load_all()  # never raises
        reasons = engine.not_ready_reasons()
        assert len(reasons) == 1 and "simple" in reasons[0] and "gpu" in reasons[0]
        assert engine.not_ready_reasons(strict=False) == []
    finally:
        engine.stop()


def test_a_failed_reload_keeps_the_loaded_version(repo: Path, tmp_path: Path) -> None:
    engine = _engine(repo, tmp_path, [PoolSpec("cpu", "onnx-cpu")])
    try:
        engine.load_all()
        before = engine.deployment("simple")
        (repo / "simple" / "1" / "model.onnx").write_bytes(b"garbage")
        with pytest.raises(InvalidInput, match="serving the version loaded before"):
            engine.load("simple")
        assert engine.deployment("simple") is before
        assert engine.ready
        # A new version that fails beside it: the old one still serves.
        shutil.copytree(repo / "simple" / "1", repo / "simple" / "2")
        with pytest.raises(InvalidInput):
            engine.load("simple")
        assert engine.deployment("simple") is before
    finally:
        engine.stop()


def test_unloading_a_model_that_failed_clears_its_failure(repo: Path, tmp_path: Path) -> None:
    (repo / "simple" / "config.yaml").write_bytes(b"\xff")
    engine = _engine(repo, tmp_path, [PoolSpec("cpu", "onnx-cpu")])
    try:
        engine.load_all()
        assert not engine.ready
        assert engine.index()[0]["state"] == "UNAVAILABLE"
        engine.unload("simple")
        assert engine.ready
    finally:
        engine.stop()
