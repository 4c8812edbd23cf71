"""Reports read from the registry: the repository index, statistics, estimates and queue snapshots."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tierserve.engine import reports
from tierserve.engine.pools import PoolKind, PoolSpec
from tierserve.engine.registry import ModelRegistry
from tierserve.errors import ModelNotFound
from tierserve.examples.basic import build_simple
from tierserve.observability.metrics import Metrics
from tierserve.repository.repository import ModelRepository
from tierserve.scheduler.tiers import TierTable


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[ModelRegistry]:
    models = tmp_path / "models"
    for version in (1, 2):
        build_simple(models / "m" / str(version) / "model.onnx")
    (models / "m" / "config.yaml").write_text("version_policy: all\n")
    build_simple(models / "idle" / "1" / "model.onnx")  # on disk, never loaded
    (models / "trt" / "1").mkdir(parents=True)
    (models / "trt" / "1" / "model.plan").write_bytes(b"")  # a Triton model tierserve cannot serve
    built = ModelRegistry(
        ModelRepository(models), Metrics(), TierTable(), [PoolSpec("cpu", PoolKind.ONNX_CPU, replicas=1)],
        state_dir=tmp_path / "state", profiles_dir=tmp_path / "state" / "profiles",
    )  # fmt: skip
    built.load("m")
    try:
        yield built
    finally:
        built.stop()


def test_the_index_lists_every_model_on_disk_with_its_versions_states(registry: ModelRegistry) -> None:
    rows = {(row["name"], row["version"]): row for row in reports.index(registry)}
    assert rows[("m", "1")]["state"] == rows[("m", "2")]["state"] == "READY"
    assert rows[("idle", "")]["state"] == "UNAVAILABLE" and rows[("idle", "")]["reason"] == ""
    assert "model.plan" in rows[("trt", "")]["reason"]


def test_statistics_of_all_one_model_or_one_version(registry: ModelRegistry) -> None:
    assert [(s["name"], s["version"]) for s in reports.statistics(registry)] == [("m", "1"), ("m", "2")]
    assert len(reports.statistics(registry, "m")) == 2
    assert [s["version"] for s in reports.statistics(registry, "m", "2")] == ["2"]
    with pytest.raises(ModelNotFound):
        reports.statistics(registry, "idle")


def test_estimates_and_queues_per_version_and_pool(registry: ModelRegistry) -> None:
    profiles = reports.profiles(registry)
    assert [(p["version"], p["pool"], p["kind"]) for p in profiles] == [
        (1, "cpu", "onnx-cpu"),
        (2, "cpu", "onnx-cpu"),
    ]
    assert all(p["seeded_from"] == "warm-up sweep" for p in profiles)
    queues = reports.queue_snapshots(registry, TierTable(), honour_tiers=True)
    assert sorted((name, version, pool) for name, version, pool, _, _ in queues) == [
        ("m", 1, "cpu"),
        ("m", 2, "cpu"),
    ]
    assert all(per_tier == {} and age is None for *_, per_tier, age in queues)
