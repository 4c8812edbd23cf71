"""Load forecast from recent arrivals: what a pool that takes ``h`` seconds to boot should plan for.

The caller reports arrivals per tier every planning interval (``observe``). ``sustained(h)`` is the
load to plan a pool with boot delay ``h`` for:

1. **Only load that lasted**: the lowest rate (smoothed over ``smooth_s``) seen over the last ``h``
   seconds. A burst that started 60 s ago does not open a GPU that boots in 300 s (it would arrive
   after the burst); one that has lasted 300 s does. Capacity for shorter bursts comes from what is
   ready, pools that boot faster, or an endpoint billed per request.
2. **Trend**: the median pairwise (Theil-Sen) slope over the last ``trend_s`` seconds carries the rate forward
   by ``h`` (twice ``h`` when rising, since the minimum over the window lags a rising rate by ``h``).
3. **Diurnal**, once the history holds a whole ``period_s`` plus the horizon: the same time
   yesterday, scaled by today's level against yesterday's at this hour, replaces the trend when it
   asks for more.

The tier mix is the share of each tier over the trend window.

Example (30 s observations)::

    f = LoadForecast(interval_s=30)
    for i in range(20):
        f.observe({"gold": 600, "bronze": 2400})  # 100 req/s for 10 minutes
    f.observe({"gold": 1800, "bronze": 7200})     # then a 30 s burst at 300 req/s
    f.sustained(300.0)["gold"]  # 20.0: the burst has not lasted a GPU's boot
    f.sustained(0.0)["gold"]    # 60.0: what is arriving now
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass
class LoadForecast:
    interval_s: float  # time between observations
    smooth_s: float = 30.0
    trend_s: float = 900.0
    period_s: float = 86_400.0
    history_s: float = 2 * 86_400.0
    _totals: deque[float] = field(init=False)
    _tiers: deque[dict[str, float]] = field(init=False)
    _cached: dict[str, object] = field(
        init=False, default_factory=dict
    )  # slope and mix until the next observation

    def __post_init__(self) -> None:
        keep = max(2, math.ceil(self.history_s / self.interval_s))
        self._totals = deque(maxlen=keep)  # requests per second in each interval
        self._tiers = deque(maxlen=max(2, math.ceil(self.trend_s / self.interval_s)))

    def observe(self, arrivals: Mapping[str, float]) -> None:
        """Arrivals per tier over the last ``interval_s``."""
        self._totals.append(sum(arrivals.values()) / self.interval_s)
        self._tiers.append({k: v / self.interval_s for k, v in arrivals.items()})
        self._cached.clear()

    @property
    def observed_s(self) -> float:
        return len(self._totals) * self.interval_s

    def mix(self) -> dict[str, float]:
        found = self._cached.get("mix")
        if isinstance(found, dict):
            return found
        sums: dict[str, float] = {}
        for row in self._tiers:
            for k, v in row.items():
                sums[k] = sums.get(k, 0.0) + v
        total = sum(sums.values())
        mix = {k: v / total for k, v in sums.items()} if total else {}
        self._cached["mix"] = mix
        return mix

    def recent(self, seconds: float) -> list[float]:
        """The observed rates (requests per second) over the last ``seconds``, oldest first."""
        n = min(len(self._totals), max(1, math.ceil(seconds / self.interval_s)))
        return [self._totals[i] for i in range(len(self._totals) - n, len(self._totals))]

    def sustained(self, horizon_s: float) -> dict[str, float]:
        """Requests per second per tier to plan a pool that boots in ``horizon_s`` for."""
        total = self.total(horizon_s)
        return {k: total * share for k, share in self.mix().items()}

    def total(self, horizon_s: float) -> float:
        if not self._totals:
            return 0.0
        k = max(1, round(self.smooth_s / self.interval_s))
        window = max(1, math.ceil(horizon_s / self.interval_s))
        smooth = self._smoothed(k, window)
        lowest = min(smooth)
        slope = self._slope()
        level = lowest + slope * horizon_s + max(0.0, slope) * horizon_s
        diurnal = self._diurnal(horizon_s, smooth[-1])
        if diurnal is not None:
            level = max(level, diurnal)
        return max(0.0, level)

    def _smoothed(self, k: int, last: int) -> list[float]:
        """Means over ``k`` observations ending at each of the ``last`` observations."""
        n = len(self._totals)
        values = [self._totals[i] for i in range(max(0, n - last - k + 1), n)]
        out, running = [], 0.0
        for i, v in enumerate(values):
            running += v
            if i >= k:
                running -= values[i - k]
            out.append(running / min(i + 1, k))
        return out[-last:]

    def _slope(self) -> float:
        """Theil-Sen slope (median of pairwise slopes) over the trend window, in up to 40 buckets:
        a burst moves a mean but not a median."""
        found = self._cached.get("slope")
        if isinstance(found, float):
            return found
        slope = self._theil_sen()
        self._cached["slope"] = slope
        return slope

    def _theil_sen(self) -> float:
        n = min(len(self._totals), max(2, round(self.trend_s / self.interval_s)))
        if n < 4:
            return 0.0
        ys = list(self._totals)[-n:]
        size = math.ceil(n / 40)
        buckets = [sum(ys[i : i + size]) / len(ys[i : i + size]) for i in range(0, n, size)]
        slopes = sorted(
            (buckets[j] - buckets[i]) / ((j - i) * size)
            for i in range(len(buckets))
            for j in range(i + 1, len(buckets))
        )
        return slopes[len(slopes) // 2] / self.interval_s

    def _diurnal(self, horizon_s: float, now_level: float) -> float | None:
        period = round(self.period_s / self.interval_s)
        ahead = math.ceil(horizon_s / self.interval_s)
        half = max(1, round(600 / self.interval_s))  # yesterday, smoothed over +-10 minutes
        values = self._totals
        then = len(values) - 1 - period
        if then - half < 0 or then + ahead + half >= len(values):
            return None

        def around(i: int) -> float:
            return sum(values[j] for j in range(i - half, i + half + 1)) / (2 * half + 1)

        base = around(then)
        return now_level * around(then + ahead) / base if base > 0 else None
