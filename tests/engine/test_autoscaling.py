"""The live autoscaler's pure helpers: a pool's capacity over the models it serves."""

from __future__ import annotations

import pytest

from tierserve.engine.autoscaling import _batch_sizes, _blend


def test_a_pools_capacity_is_the_arrival_weighted_harmonic_mean_of_its_models() -> None:
    # 90 req/s of a model one replica serves at 100/s and 10 req/s of one it serves at 10/s:
    # 0.9 + 1.0 = 1.9 replica-seconds per second for 100 req/s, so 100 / 1.9 = 52.6 req/s per replica.
    assert _blend([(90.0, 100.0), (10.0, 10.0)]) == pytest.approx(100 / 1.9)
    assert _blend([(0.0, 100.0), (0.0, 10.0)]) == 10.0  # no arrivals yet: the slowest model
    assert _blend([(5.0, 0.0)]) == 0.0  # no estimate yet


def test_batch_sizes_are_the_profiled_powers_of_two_up_to_the_largest_batch() -> None:
    assert _batch_sizes(32) == [1, 2, 4, 8, 16, 32]
    assert _batch_sizes(0) == [1]
