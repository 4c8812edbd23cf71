"""The model registry on its own (no data plane): load, reload, unload, the states it records, and
the hook told which versions changed."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import pytest

from tierserve.engine.pools import PoolKind, PoolSpec
from tierserve.engine.registry import UNLOADED, ModelRegistry, ModelState
from tierserve.errors import InvalidInput, ModelNotFound
from tierserve.examples.basic import build_simple
from tierserve.observability.metrics import Metrics
from tierserve.repository.repository import ModelRepository
from tierserve.scheduler.tiers import TierTable


def _registry(root: Path, changes: list[tuple[str, list[int]]]) -> ModelRegistry:
    def changed(name: str, versions: Collection[int]) -> None:
        changes.append((name, sorted(versions)))

    return ModelRegistry(
        ModelRepository(root / "models"),
        Metrics(),
        TierTable(),
        [PoolSpec("cpu", PoolKind.ONNX_CPU, replicas=1)],
        state_dir=root / "state",
        profiles_dir=root / "state" / "profiles",
        versions_changed=changed,
    )


def test_load_reload_and_unload_record_states_and_tell_the_hook(tmp_path: Path) -> None:
    build_simple(tmp_path / "models" / "m" / "1" / "model.onnx")
    changes: list[tuple[str, list[int]]] = []
    registry = _registry(tmp_path, changes)
    try:
        assert registry.not_ready_reasons() == ["loading models"]
        registry.load_all()
        assert registry.not_ready_reasons() == []
        deployment = registry.deployment("m")
        assert deployment.version == 1 and list(deployment.runners) == ["cpu"]
        # The signature the clients see is the graph's, as the repository reads it from the file.
        assert deployment.signature == registry.repository.signature("m", 1)
        assert registry.states()[("m", 1)].state is ModelState.READY
        assert changes == [("m", [1])]

        build_simple(tmp_path / "models" / "m" / "2" / "model.onnx")
        registry.load("m")  # the latest version replaces version 1
        assert registry.versions("m") == [2]
        assert registry.states()[("m", 1)].reason == UNLOADED
        assert changes[-1] == ("m", [1, 2])

        registry.unload("m")
        assert registry.versions("m") == [] and registry.loaded("m") is None
        with pytest.raises(ModelNotFound):
            registry.deployment("m")
        assert registry.states()[("m", 2)].state is ModelState.UNAVAILABLE
        assert changes[-1] == ("m", [2])
    finally:
        registry.stop()


def test_a_broken_model_fails_alone_and_holds_strict_readiness(tmp_path: Path) -> None:
    build_simple(tmp_path / "models" / "good" / "1" / "model.onnx")
    broken = tmp_path / "models" / "bad" / "1" / "model.onnx"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"\x08\x07 not an onnx file")
    registry = _registry(tmp_path, [])
    try:
        registry.load_all()  # never raises
        assert registry.versions("good") == [1]
        state = registry.states()[("bad", 1)]
        assert state.failed and "cannot load" in state.reason
        (reason,) = registry.not_ready_reasons()
        assert "'bad'" in reason
        assert registry.not_ready_reasons(strict=False) == []
        with pytest.raises(InvalidInput, match="cannot load"):
            registry.load("bad")
        registry.unload("bad")  # unloading a failed model clears its failure
        assert registry.not_ready_reasons() == []
    finally:
        registry.stop()


def test_max_batch_size_needs_a_batchable_graph(tmp_path: Path) -> None:
    build_simple(tmp_path / "models" / "m" / "1" / "model.onnx")
    (tmp_path / "models" / "m" / "config.yaml").write_text("max_batch_size: 0\n")
    registry = _registry(tmp_path, [])
    try:
        registry.load("m")
        assert registry.deployment("m").max_batch_size == 0  # the config may turn batching off
    finally:
        registry.stop()
