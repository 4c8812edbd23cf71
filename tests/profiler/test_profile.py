from pathlib import Path

import numpy as np
import pytest

from tierserve.datatypes import BY_NAME
from tierserve.errors import InvalidInput
from tierserve.profiler.profile import BatchTiming, Profile, load_profile, profile_path, save_profile
from tierserve.profiler.sweep import batch_sizes, dummy_feeds, sweep
from tierserve.repository.signature import Signature, TensorSpec


class FakeBackend:
    """Service time grows with rows; records what it was fed."""

    kind = "fake"
    signature = Signature(
        inputs=(TensorSpec("ids", BY_NAME["INT64"], (-1, -1)),),
        outputs=(TensorSpec("y", BY_NAME["FP32"], (-1, 4)),),
    )

    def __init__(self) -> None:
        self.shapes: list[tuple[int, ...]] = []

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.shapes.append(feeds["ids"].shape)
        return {"y": np.zeros((feeds["ids"].shape[0], 4), np.float32)}

    def available(self) -> bool:
        return True

    def close(self) -> None:
        pass


def test_batch_sizes_are_powers_of_two_up_to_the_maximum() -> None:
    assert batch_sizes(0) == [1]
    assert batch_sizes(8) == [1, 2, 4, 8]
    assert batch_sizes(12) == [1, 2, 4, 8, 12]


def test_sweep_runs_each_size_with_the_configured_shape() -> None:
    backend = FakeBackend()
    timings = sweep(backend, 4, {"ids": (32,)}, reps=3)
    assert sorted(timings) == [1, 2, 4]
    assert all(t.samples == 3 and t.p95_ms >= t.p50_ms >= 0 for t in timings.values())
    assert set(backend.shapes) == {(1, 32), (2, 32), (4, 32)}
    assert dummy_feeds(backend, 2, {}, batching=True)["ids"].shape == (2, 1)


def test_profile_files_round_trip(tmp_path: Path) -> None:
    profile = Profile(
        "m", 2, "cuda:0", "torch-cuda", {1: BatchTiming(1.0, 1.0, 1.5, 0.1, 20)}, "2026-11-22T00:00:00Z"
    )
    path = save_profile(tmp_path, profile)
    assert path == profile_path(tmp_path, "m", 2, "cuda:0") == tmp_path / "m" / "2" / "cuda_0.json"
    assert load_profile(path) == profile


def test_a_broken_profile_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "p.json").write_text('{"model": "m"}')
    with pytest.raises(InvalidInput, match="invalid profile"):
        load_profile(tmp_path / "p.json")
