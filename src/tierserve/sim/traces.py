"""Request traces: arrival times (seconds, sorted) and a tier index per request.

Generators are seeded, so the same seed gives the same trace. ``replay`` reads a recorded log
(CSV with a header, or JSON lines) of ``arrival`` (seconds), ``model`` and ``tier``.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tierserve.errors import InvalidInput


@dataclass(frozen=True)
class Trace:
    arrivals: np.ndarray  # float64 seconds, non-decreasing
    tiers: np.ndarray  # int index into ``tier_names``
    tier_names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.arrivals)

    @property
    def duration_s(self) -> float:
        return float(self.arrivals[-1]) if len(self.arrivals) else 0.0


@dataclass(frozen=True)
class CountTrace:
    """Arrivals per tick and tier."""

    counts: np.ndarray  # (ticks, tiers) int
    tick_s: float
    tier_names: tuple[str, ...]

    @classmethod
    def from_trace(cls, trace: Trace, tick_s: float, duration_s: float | None = None) -> CountTrace:
        span = duration_s if duration_s is not None else trace.duration_s
        ticks = max(1, math.ceil(span / tick_s - 1e-9))
        index = np.minimum((trace.arrivals / tick_s).astype(np.int64), ticks - 1)
        counts = np.zeros((ticks, len(trace.tier_names)), dtype=np.int64)
        np.add.at(counts, (index, trace.tiers), 1)
        return cls(counts, tick_s, trace.tier_names)

    @property
    def requests(self) -> int:
        return int(self.counts.sum())

    @property
    def duration_s(self) -> float:
        return len(self.counts) * self.tick_s


def _tiers(rng: np.random.Generator, n: int, mix: Sequence[float]) -> np.ndarray:
    p = np.asarray(mix, dtype=float)
    return rng.choice(len(p), size=n, p=p / p.sum())


def poisson(
    rate: float, duration_s: float, mix: Sequence[float], names: Sequence[str], seed: int = 0
) -> Trace:
    rng = np.random.default_rng(seed)
    n = rng.poisson(rate * duration_s)
    arrivals = np.sort(rng.uniform(0.0, duration_s, n))
    return Trace(arrivals, _tiers(rng, n, mix), tuple(names))


def _inhomogeneous(rate_at: np.ndarray, step_s: float, rng: np.random.Generator) -> np.ndarray:
    """Poisson arrivals whose rate is piecewise constant over steps of ``step_s``."""
    counts = rng.poisson(rate_at * step_s)
    starts = np.repeat(np.arange(len(rate_at)) * step_s, counts)
    return np.sort(starts + rng.uniform(0.0, step_s, counts.sum()))


def diurnal(
    mean_rate: float,
    duration_s: float,
    mix: Sequence[float],
    names: Sequence[str],
    *,
    peak_to_trough: float = 2.0,
    period_s: float = 86_400.0,
    seed: int = 0,
) -> Trace:
    """A day's sinusoid (peak:trough ~2:1 is typical), optionally compressed by a shorter period."""
    rng = np.random.default_rng(seed)
    step = max(1.0, period_s / 1440)
    t = np.arange(0.0, duration_s, step)
    amplitude = (peak_to_trough - 1) / (peak_to_trough + 1)
    rate = mean_rate * (1 + amplitude * np.sin(2 * math.pi * t / period_s - math.pi / 2))
    arrivals = _inhomogeneous(rate, step, rng)
    return Trace(arrivals, _tiers(rng, len(arrivals), mix), tuple(names))


def bursts(
    base_rate: float,
    burst_rate: float,
    duration_s: float,
    mix: Sequence[float],
    names: Sequence[str],
    *,
    every_s: float = 300.0,
    burst_s: float = 30.0,
    seed: int = 0,
) -> Trace:
    rng = np.random.default_rng(seed)
    step = 1.0
    t = np.arange(0.0, duration_s, step)
    rate = np.where((t % every_s) < burst_s, burst_rate, base_rate)
    arrivals = _inhomogeneous(rate, step, rng)
    return Trace(arrivals, _tiers(rng, len(arrivals), mix), tuple(names))


def replay(path: Path, names: Sequence[str], model: str | None = None) -> Trace:
    rows: list[dict[str, str]]
    text = path.read_text()
    if path.suffix in (".jsonl", ".ndjson"):
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    else:
        rows = list(csv.DictReader(text.splitlines()))
    index = {name: i for i, name in enumerate(names)}
    try:
        kept = [r for r in rows if model is None or r.get("model") == model]
        arrivals = np.asarray([float(r["arrival"]) for r in kept])
        tiers = np.asarray([index[str(r["tier"])] for r in kept], dtype=int)
    except (KeyError, ValueError) as exc:
        raise InvalidInput(f"{path}: each record needs arrival (seconds) and a known tier: {exc}") from None
    order = np.argsort(arrivals, kind="stable")
    start = arrivals[order][0] if len(arrivals) else 0.0
    return Trace(arrivals[order] - start, tiers[order], tuple(names))


def day_rate(
    mean_rate: float,
    duration_s: float,
    tick_s: float,
    *,
    peak_to_trough: float = 3.0,
    period_s: float = 86_400.0,
    bursts_per_hour: float = 0.0,
    burst_s: tuple[float, float] = (30.0, 600.0),
    burst_gain: tuple[float, float] = (0.3, 0.8),
    seed: int = 0,
) -> np.ndarray:
    """Arrival rate per tick: a diurnal sine (trough at the start, peak half a period later) with
    bursts at random times (Poisson, ``bursts_per_hour``), each lasting a log-uniform draw from
    ``burst_s`` and raising the rate by a uniform draw from ``burst_gain``."""
    rng = np.random.default_rng(seed)
    t = np.arange(0.0, duration_s, tick_s)
    amplitude = (peak_to_trough - 1) / (peak_to_trough + 1)
    rate = mean_rate * (1 + amplitude * np.sin(2 * math.pi * t / period_s - math.pi / 2))
    for _ in range(rng.poisson(bursts_per_hour * duration_s / 3600)):
        start = rng.uniform(0.0, duration_s)
        length = math.exp(rng.uniform(math.log(burst_s[0]), math.log(burst_s[1])))
        rate[(t >= start) & (t < start + length)] *= 1 + rng.uniform(*burst_gain)
    return rate


def counts_from_rate(
    rate: np.ndarray, tick_s: float, mix: Sequence[float], names: Sequence[str], seed: int = 0
) -> CountTrace:
    """Poisson arrivals per tick and tier for a rate per tick."""
    rng = np.random.default_rng(seed)
    p = np.asarray(mix, dtype=float)
    counts = rng.poisson(np.outer(rate * tick_s, p / p.sum()))
    return CountTrace(counts.astype(np.int64), tick_s, tuple(names))


def arrivals_from_rate(
    rate: np.ndarray, tick_s: float, mix: Sequence[float], names: Sequence[str], seed: int = 0
) -> Trace:
    """The same process request by request, for the event-level simulator."""
    rng = np.random.default_rng(seed)
    arrivals = _inhomogeneous(rate, tick_s, rng)
    return Trace(arrivals, _tiers(rng, len(arrivals), mix), tuple(names))
