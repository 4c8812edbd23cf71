"""One observation path for the live autoscaler and the simulators: a window of a pool's activity
turned into a ``PoolObservation``.

* utilisation is capacity used (rows served x replica-seconds per row at the largest batch) over
  ready replica-seconds, never time busy: a lightly loaded batching replica running batches of one
  is busy, not full;
* ``p95_ratio`` is the worst p95 latency over target among the deadline tiers with at least
  ``MIN_SAMPLES`` requests in the window;
* ``queue_ratio`` is the age of the oldest queued deadline-tier request over the tightest target.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from typing import TypeVar

import numpy as np

from tierserve.autoscale.policy import PoolObservation

MIN_SAMPLES = 5
K = TypeVar("K", bound=Hashable)


def p95_ratio(latencies: Iterable[tuple[K, float]], targets: Mapping[K, float]) -> float:
    """Worst p95 / target over the tiers in ``targets`` (deadline tiers), 0 without enough samples."""
    by_tier: dict[K, list[float]] = {}
    for tier, seconds in latencies:
        if tier in targets:
            by_tier.setdefault(tier, []).append(seconds)
    worst = 0.0
    for tier, values in by_tier.items():
        if len(values) >= MIN_SAMPLES:
            worst = max(worst, float(np.percentile(values, 95)) / targets[tier])
    return worst


def observe_pool(
    pool: str,
    *,
    ready: int,
    starting: int,
    capacity_used_s: float,
    elapsed_s: float,
    latencies: Iterable[tuple[K, float]],
    targets: Mapping[K, float],
    oldest_wait_s: float | None,
) -> PoolObservation:
    """``targets``: the deadline tiers' targets in seconds; ``oldest_wait_s``: age of the oldest
    queued deadline-tier request (None when none waits)."""
    utilisation = min(1.0, capacity_used_s / (max(ready, 1) * max(elapsed_s, 1e-3)))
    tightest = min(targets.values(), default=1.0)
    queue_ratio = 0.0 if oldest_wait_s is None else oldest_wait_s / tightest
    return PoolObservation(pool, ready, starting, utilisation, p95_ratio(latencies, targets), queue_ratio)
