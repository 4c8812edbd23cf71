"""The tests the judge runs, in plain Python (no SciPy): two proportions and Mann-Whitney's U.

Both are one-sided ("is the candidate worse?") and use the normal approximation, which is sound at
the sample sizes a rollout step requires (tens to thousands per arm). Example::

    two_proportions_greater(12, 300, 10, 2700).p_value   # candidate 4% errors vs stable 0.37%: ~1e-9
    mann_whitney_greater([2.0, 3.0, 4.0], [1.0, 1.5, 2.0]).p_value
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TestResult:
    statistic: float  # the z score (positive: the candidate looks worse)
    p_value: float  # one-sided


def normal_sf(z: float) -> float:
    """P(Z > z) for a standard normal Z."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def two_proportions_greater(x1: int, n1: int, x2: int, n2: int) -> TestResult:
    """Is the rate ``x1/n1`` greater than ``x2/n2``? Fisher's exact test (one-sided), with the pooled
    two-proportion z score as the statistic. Exact because rollouts compare rare events (errors,
    SLO misses, the slowest 5%) on small canary samples, where the normal approximation claims
    p-values thousands of times too small (5 errors in 204 requests against a 0.2% rate: z gives
    3e-8, the exact tail 4e-3)."""
    if n1 <= 0 or n2 <= 0 or not 0 <= x1 <= n1 or not 0 <= x2 <= n2:
        return TestResult(0.0, 1.0)
    events = x1 + x2
    pooled = events / (n1 + n2)
    variance = pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2)
    if variance <= 0.0:  # no events in either arm, or only events: nothing tells them apart
        return TestResult(0.0, 1.0)
    z = (x1 / n1 - x2 / n2) / math.sqrt(variance)
    return TestResult(z, _hypergeometric_sf(x1, n1 + n2, events, n1))


def _hypergeometric_sf(k: int, total: int, events: int, drawn: int) -> float:
    """P(X >= k) for X the events among ``drawn`` of ``total`` items of which ``events`` are events.
    Summed from whichever end is shorter (below the mean, as one minus the lower tail)."""
    low, top = max(0, drawn - (total - events)), min(events, drawn)
    if k <= low:
        return 1.0
    if k > top:
        return 0.0
    log_norm = _log_choose(total, drawn)

    def pmf(i: int) -> float:
        return math.exp(_log_choose(events, i) + _log_choose(total - events, drawn - i) - log_norm)

    if k > drawn * events / total:
        return min(1.0, math.fsum(pmf(i) for i in range(k, top + 1)))
    return max(0.0, 1.0 - math.fsum(pmf(i) for i in range(low, k)))


def _log_choose(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


# The rate ratios (candidate over stable) the sequential error test weighs equally.
RATE_RATIOS = (1.5, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)


def rate_ratio_evalue(x1: int, n1: int, x2: int, n2: int) -> float:
    """Evidence that events happen more often per request in arm 1 than in arm 2, as an e-value that
    stays valid however often it is checked (a mixture sequential probability ratio test).

    Given where the ``x1 + x2`` events fell, each event is in arm 1 with probability
    ``s = n1 / (n1 + n2)`` if the rates are equal, and ``r s / (r s + 1 - s)`` if arm 1's rate is
    ``r`` times arm 2's. The likelihood ratio, averaged over ``RATE_RATIOS``, is a martingale under
    equal rates, so by Ville's inequality it ever reaches ``1 / alpha`` with probability at most
    ``alpha``: checked every few seconds, it needs no share of the budget per look. Example: with
    10% of the traffic on the candidate and no errors on stable, 4 candidate errors give about 300.
    """
    if n1 <= 0 or n2 <= 0:
        return 1.0
    share = n1 / (n1 + n2)
    total = 0.0
    for ratio in RATE_RATIOS:
        alt = ratio * share / (ratio * share + 1.0 - share)
        log_lr = x1 * math.log(alt / share) + x2 * math.log((1.0 - alt) / (1.0 - share))
        total += math.exp(min(log_lr, 700.0))
    return total / len(RATE_RATIOS)


def mann_whitney_greater(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> TestResult:
    """Is ``a`` stochastically greater than ``b`` (e.g. the candidate's latencies slower)? Mann-Whitney's
    U with mid-ranks for ties, the tie-corrected variance and a continuity correction."""
    n1, n2 = len(a), len(b)
    n = n1 + n2
    if n1 == 0 or n2 == 0:
        return TestResult(0.0, 1.0)
    values = np.concatenate([np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)])
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    first = np.concatenate([[True], ordered[1:] != ordered[:-1]])
    starts = np.concatenate([np.flatnonzero(first), [n]])  # where each run of equal values begins
    run = np.cumsum(first) - 1  # the run of each sorted position
    mid_ranks = (starts[run] + starts[run + 1] + 1) / 2.0  # 1-based mid-rank of each run
    ranks = np.empty(n)
    ranks[order] = mid_ranks
    u = float(ranks[:n1].sum()) - n1 * (n1 + 1) / 2.0
    ties = np.diff(starts).astype(np.float64)
    tie_term = float((ties**3 - ties).sum())
    variance = n1 * n2 / 12.0 * ((n + 1) - tie_term / (n * (n - 1))) if n > 1 else 0.0
    if variance <= 0.0:
        return TestResult(0.0, 1.0)
    z = (u - n1 * n2 / 2.0 - 0.5) / math.sqrt(variance)
    return TestResult(z, normal_sf(z))


def quantile(values: Sequence[float] | np.ndarray, q: float, *, ordered: bool = False) -> float:
    """The nearest-rank ``q`` quantile (0 < q <= 1) of ``values`` (already sorted when ``ordered``);
    NaN when empty."""
    if len(values) == 0:
        return math.nan
    data = values if ordered else np.sort(np.asarray(values, dtype=np.float64))
    return float(data[max(0, min(len(data) - 1, math.ceil(q * len(data)) - 1))])
