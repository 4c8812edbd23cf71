"""Online estimate of a replica's service time as a function of batch rows.

Each observed batch updates an exponentially weighted mean and mean absolute deviation for its
row count (the TCP retransmission-timer estimator). Predictions for row counts never observed are
interpolated linearly between the nearest observed ones, and extrapolated from the per-row cost of
the largest. ``predict`` returns mean + ``margin`` deviations: the scheduler plans with a pessimistic
figure so that what it admits finishes in time at the tail, not just on average.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Point:
    mean: float
    dev: float
    outlier: bool = False  # the last observation was beyond the clip


class ServiceTimeEstimator:
    def __init__(
        self, *, alpha: float = 0.125, beta: float = 0.25, margin: float = 2.0, clip: float = 4.0
    ) -> None:
        self.alpha = alpha
        self.clip = clip
        self.beta = beta
        self.margin = margin
        self._points: dict[int, _Point] = {}
        self._sizes: list[int] = []
        self.version = 0  # bumped on every change, so that callers can cache what they derive
        self._efficient: tuple[tuple[int, float, int] | None, int] = (None, 0)

    @property
    def known(self) -> bool:
        return bool(self._points)

    def observe(self, rows: int, seconds: float) -> None:
        self.version += 1
        point = self._points.get(rows)
        if point is None:
            # A size first seen between known ones: their spread, not a guess of a quarter of the
            # time, which would make every new size look far slower than it is for a while.
            dev = self._interpolate(rows, lambda p: p.dev) if self._points else seconds / 4
            self._points[rows] = _Point(seconds, dev)
            bisect.insort(self._sizes, rows)
            return
        # One stall (a thread descheduled on a busy host, a GIL convoy) can take ten times the usual
        # time. Taken whole, it multiplied this size's spread, and since a size is only re-estimated
        # when a batch of that size runs again, one 100 ms sample of a one-row batch made every gold
        # request look late for seconds (seen live: predict(1) stuck at 50 ms for a 13 ms batch). So
        # a lone residual beyond ``clip`` deviations counts as ``clip`` deviations; a second one in a
        # row is a real change (a slower host, longer inputs) and counts whole.
        residual = seconds - point.mean
        limit = self.clip * max(point.dev, point.mean / 8)
        outlier = abs(residual) > limit
        if outlier and not point.outlier:
            residual = max(-limit, min(limit, residual))
        point.outlier = outlier
        point.dev += self.beta * (abs(residual) - point.dev)
        point.mean += self.alpha * residual

    def seed(self, rows: int, mean: float, dev: float) -> None:
        """Start (or restart) the estimate for ``rows`` from a profile's mean and spread."""
        self.version += 1
        if rows not in self._points:
            bisect.insort(self._sizes, rows)
        self._points[rows] = _Point(mean, dev)

    def mean(self, rows: int) -> float:
        return self._interpolate(rows, lambda p: p.mean)

    def predict(self, rows: int) -> float:
        """Pessimistic service time for a batch of ``rows`` (0.0 while nothing has been observed)."""
        return self._interpolate(rows, lambda p: p.mean + self.margin * p.dev)

    def max_rows_within(self, seconds: float, limit: int) -> int:
        """Largest row count in 1..limit predicted to finish within ``seconds`` (at least 1).

        Service time grows with rows, so a binary search finds it in a few predictions."""
        lo, hi = 1, limit
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.predict(mid) <= seconds:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def efficient_rows(self, limit: int, share: float = 0.97) -> int:
        """The throughput-sized batch: the smallest observed row count up to ``limit`` that serves at
        least ``share`` of the best rows per second observed up to ``limit`` (``limit`` when nothing
        that small was observed). Past that size a batch only holds its replica longer: on a busy
        2-core host MiniLM served 191 rows/s at 16 rows a batch and 168 at 32."""
        key = (limit, share, self.version)
        if self._efficient[0] != key:
            rates = {rows: rows / p.mean for rows, p in self._points.items() if rows <= limit and p.mean > 0}
            best = max(rates.values(), default=0.0)
            rows = min((r for r, rate in rates.items() if rate >= share * best), default=limit)
            self._efficient = (key, rows)
        return self._efficient[1]

    def snapshot(self) -> dict[int, tuple[float, float]]:
        return {rows: (p.mean, p.dev) for rows, p in sorted(self._points.items())}

    def _interpolate(self, rows: int, value: Callable[[_Point], float]) -> float:
        if not self._sizes:
            return 0.0
        if rows in self._points:
            return value(self._points[rows])
        i = bisect.bisect_left(self._sizes, rows)
        if i == 0:
            # Smaller than anything seen: no cheaper than the smallest batch seen.
            return value(self._points[self._sizes[0]])
        if i == len(self._sizes):
            largest = self._sizes[-1]
            return value(self._points[largest]) * rows / largest
        lo, hi = self._sizes[i - 1], self._sizes[i]
        v_lo, v_hi = value(self._points[lo]), value(self._points[hi])
        return v_lo + (v_hi - v_lo) * (rows - lo) / (hi - lo)
