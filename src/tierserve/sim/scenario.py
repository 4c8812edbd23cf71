"""Scenario files for ``tierserve simulate`` and the baselines that run beside tierserve's policy.

A scenario (YAML) names a trace, the tiers (default gold/silver/bronze) and the pools::

    trace: {kind: diurnal, mean_rate: 100, duration_s: 14400, period_s: 14400, peak_to_trough: 2,
            mix: {gold: 0.2, silver: 0.3, bronze: 0.5}, seed: 1}
    pools: [...]            # see tierserve.sim.fleet
    tick_s: 10

A day-scale scenario (``trace: {kind: day, ...}``, see ``deploy/sim/fleet-day.yaml``) is simulated by
the fluid model per tick (``tierserve.sim.fluid``, ``fluid_tick_s`` long, default 1 s); so is any
scenario with ``simulator: fluid``. tierserve runs its fleet planner there, every ``tick_s``.

Baselines, on the same trace, with first-come-first-served scheduling (no tiers, nothing rejected
early, as Triton, Ray Serve or KServe schedule):

* ``<pool>-fixed`` for every pool kind: a fixed fleet of only that kind, sized (by bisection on the
  replica count) to the smallest fleet that serves gold within target for >= 99.9% of requests;
  the cheapest of them that meets gold is the ``cheapest single-pool fleet`` tierserve is compared to
  (with a GPU pool among them, ``gpu-fixed`` is the all-GPU fleet);
* ``reactive``: the pool kind cheapest per item at full batches, autoscaled on utilisation alone (no
  SLO signal, no routing).

In the fluid model the fixed fleets keep their pool's provisioning delay (an interrupted spot
replica is replaced after a boot), approximate pools get no fixed fleet (they cannot serve the
exact tiers), and the search for the smallest fleet starts from the busiest second's need.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
import yaml

from tierserve.errors import InvalidInput
from tierserve.scheduler.tiers import DEFAULT_TIERS, Tier, TierTable
from tierserve.sim import traces
from tierserve.sim.fleet import SimPool, SimPoolSpec
from tierserve.sim.fluid import FluidConfig, FluidResult, simulate_fluid
from tierserve.sim.planning import capacity_rps
from tierserve.sim.report import GOLD_GOAL
from tierserve.sim.simulator import SimConfig, SimResult, simulate
from tierserve.sim.traces import CountTrace, Trace

Progress = Callable[[str], Callable[[float], None]]  # run name -> report of its share done


class _Summarised(Protocol):
    def summary(self) -> dict[str, Any]: ...


R = TypeVar("R", bound=_Summarised)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Scenario:
    trace: Trace
    tiers: list[Tier]
    pools: list[SimPoolSpec]
    tick_s: float = 10.0
    seed: int = 0
    counts: CountTrace | None = None  # set: simulated by the fluid model (tierserve.sim.fluid)


def load_scenario(path: Path, *, seed: int | None = None) -> Scenario:
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise InvalidInput(f"cannot read scenario {path}: {exc}") from None
    if not isinstance(raw, Mapping) or "trace" not in raw or "pools" not in raw:
        raise InvalidInput(f"scenario {path} needs 'trace' and 'pools'")
    tiers = TierTable.from_config({"tiers": raw["tiers"]}).tiers if raw.get("tiers") else list(DEFAULT_TIERS)
    chosen_seed = seed if seed is not None else int(raw.get("seed", 0))
    pools = [SimPoolSpec.from_mapping(p, path.parent) for p in raw["pools"]]
    tick_s = float(raw.get("tick_s", 10.0))
    fluid_tick = float(raw.get("fluid_tick_s", 1.0))
    if raw["trace"].get("kind") == "day":
        counts = build_day(raw["trace"], fluid_tick, chosen_seed)
        empty = Trace(np.empty(0), np.empty(0, dtype=np.int64), counts.tier_names)
        return Scenario(empty, tiers, pools, tick_s, chosen_seed, counts)
    trace = build_trace(raw["trace"], path.parent, chosen_seed)
    binned = CountTrace.from_trace(trace, fluid_tick) if raw.get("simulator") == "fluid" else None
    return Scenario(trace, tiers, pools, tick_s, chosen_seed, binned)


def build_day(raw: Mapping[str, Any], tick_s: float, seed: int) -> CountTrace:
    mix_raw = raw.get("mix", {"gold": 0.2, "silver": 0.3, "bronze": 0.5})
    seed = int(raw.get("seed", seed))
    try:
        rate = traces.day_rate(
            float(raw["mean_rate"]), float(raw["duration_s"]), tick_s,
            peak_to_trough=float(raw.get("peak_to_trough", 3.0)), period_s=float(raw.get("period_s", 86_400)),
            bursts_per_hour=float(raw.get("bursts_per_hour", 0.0)),
            burst_s=_pair(raw.get("burst_s", (30, 600))), burst_gain=_pair(raw.get("burst_gain", (0.3, 0.8))),
            seed=seed,
        )  # fmt: skip
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidInput(f"day trace needs mean_rate and duration_s: {exc}") from None
    return traces.counts_from_rate(rate, tick_s, list(mix_raw.values()), list(mix_raw), seed)


def _pair(value: Any) -> tuple[float, float]:
    low, high = value
    return float(low), float(high)


def build_trace(raw: Mapping[str, Any], base: Path, seed: int) -> Trace:
    kind = raw.get("kind")
    mix_raw = raw.get("mix", {"gold": 0.2, "silver": 0.3, "bronze": 0.5})
    names, mix = list(mix_raw), list(mix_raw.values())
    seed = int(raw.get("seed", seed))
    if kind == "poisson":
        return traces.poisson(float(raw["rate"]), float(raw["duration_s"]), mix, names, seed)
    if kind == "diurnal":
        return traces.diurnal(
            float(raw["mean_rate"]), float(raw["duration_s"]), mix, names,
            peak_to_trough=float(raw.get("peak_to_trough", 2.0)), period_s=float(raw.get("period_s", 86_400)),
            seed=seed,
        )  # fmt: skip
    if kind == "bursts":
        return traces.bursts(
            float(raw["base_rate"]), float(raw["burst_rate"]), float(raw["duration_s"]), mix, names,
            every_s=float(raw.get("every_s", 300)), burst_s=float(raw.get("burst_s", 30)), seed=seed,
        )  # fmt: skip
    if kind == "replay":
        path = Path(str(raw["path"]))
        return traces.replay(path if path.is_absolute() else base / path, names, raw.get("model"))
    raise InvalidInput("trace kind must be poisson, diurnal, bursts or replay")


def run_tierserve(s: Scenario, progress: Progress | None = None) -> SimResult:
    config = SimConfig(s.pools, s.tiers, True, "plan", s.tick_s, s.seed, "tierserve")
    return simulate(config, s.trace, progress("tierserve") if progress else None)


def cheapest_pool(pools: list[SimPoolSpec]) -> SimPoolSpec:
    def cost(spec: SimPoolSpec) -> float:
        return SimPool(spec, np.random.default_rng(0)).cost_per_item()

    return min(pools, key=cost)


def fixed(spec: SimPoolSpec, n: int) -> SimPoolSpec:
    return dataclasses.replace(spec, replicas=n, min_replicas=n, max_replicas=n, provisioning_delay_s=0.0)


def run_fixed_sized_for_gold(
    s: Scenario, spec: SimPoolSpec, name: str, progress: Progress | None = None
) -> tuple[SimResult, int]:
    """The smallest fixed fleet of ``spec`` whose FIFO service meets gold for >= 99.9% (bisection)."""

    def run(n: int) -> SimResult:
        config = SimConfig([fixed(spec, n)], s.tiers, False, "fixed", s.tick_s, s.seed, name)
        return simulate(config, s.trace, progress(f"{name} x{n}") if progress else None)

    def meets(result: SimResult) -> bool:
        gold = min(s.tiers, key=lambda t: t.priority).name
        return bool(result.summary()["tiers"][gold]["attainment"] >= GOLD_GOAL)

    result, n = _smallest(run, meets, spec.max_replicas)
    log.info("%s: %d replicas", name, n)
    return result, n


def _smallest(
    run: Callable[[int], R], meets: Callable[[R], bool], limit: int, start: int = 1
) -> tuple[R, int]:
    """The smallest count meeting the goal, searched from ``start``: down one at a time while it
    meets, else up (doubling the step) and then by bisection; the largest when none within ``limit``."""
    result = run(start)
    if meets(result):
        best = (result, start)
        while best[1] > 1:
            smaller = run(best[1] - 1)
            if not meets(smaller):
                break
            best = (smaller, best[1] - 1)
        return best
    lo, step, hi = start + 1, start, start
    while not meets(result):
        if hi >= limit:
            return result, hi  # cannot meet it within the pool's max: report the largest
        hi = min(limit, hi + step)
        result = run(hi)
        if not meets(result):
            lo, step = hi + 1, step * 2
    best = (result, hi)
    while lo < best[1]:
        mid = (lo + best[1]) // 2
        result = run(mid)
        if meets(result):
            best = (result, mid)
        else:
            lo = mid + 1
    return best


def run_reactive(s: Scenario, spec: SimPoolSpec, progress: Progress | None = None) -> SimResult:
    config = SimConfig([spec], s.tiers, False, "utilisation", s.tick_s, s.seed, "reactive")
    return simulate(config, s.trace, progress("reactive") if progress else None)


def run_all(s: Scenario, *, baselines: bool = True, progress: Progress | None = None) -> dict[str, Any]:
    if s.counts is not None:
        return run_all_fluid(s, s.counts, baselines=baselines, progress=progress)
    results = {"tierserve": run_tierserve(s, progress)}
    sizes: dict[str, int] = {}
    if baselines:
        for spec in s.pools:
            name = f"{spec.name}-fixed"
            results[name], sizes[name] = run_fixed_sized_for_gold(s, spec, name, progress)
        results["reactive"] = run_reactive(s, cheapest_pool(s.pools), progress)
    return {"results": results, "fixed_sizes": sizes}


# -- the day scale: the fluid model -----------------------------------------------------------------


def _gold(s: Scenario) -> str:
    return min(s.tiers, key=lambda t: t.priority).name


def _meets_gold(s: Scenario, result: _Summarised) -> bool:
    return bool(result.summary()["tiers"][_gold(s)]["attainment"] >= GOLD_GOAL)


def run_all_fluid(
    s: Scenario, counts: CountTrace, *, baselines: bool = True, progress: Progress | None = None
) -> dict[str, Any]:
    def fluid(config: FluidConfig) -> FluidResult:
        return simulate_fluid(config, counts, progress(config.name) if progress else None)

    results: dict[str, Any] = {
        "tierserve": fluid(FluidConfig(s.pools, s.tiers, True, "plan", s.tick_s, s.seed, "tierserve"))
    }
    sizes: dict[str, int] = {}
    notes: list[str] = []
    if baselines:
        busiest = float(np.quantile(counts.counts.sum(axis=1), 0.999)) / counts.tick_s
        for spec in s.pools:
            name = f"{spec.name}-fixed"
            if spec.approximate:
                notes.append(f"{name}: none (approximate: cannot serve the exact tiers)")
                continue
            per_replica = capacity_rps(spec, s.tiers)

            def run(n: int, spec: SimPoolSpec = spec, name: str = name) -> FluidResult:
                sized = dataclasses.replace(spec, replicas=n, min_replicas=n, max_replicas=n)
                return fluid(FluidConfig([sized], s.tiers, False, "fixed", s.tick_s, s.seed, f"{name} x{n}"))

            guess = max(1, min(spec.max_replicas, math.ceil(busiest / per_replica))) if per_replica else 1
            result, n = _smallest(run, lambda r: _meets_gold(s, r), spec.max_replicas, guess)
            result.name = name
            results[name], sizes[name] = result, n
            if not _meets_gold(s, result):
                notes.append(f"{name}: even {n} replicas (its maximum) miss gold >= {GOLD_GOAL:.1%}")
        exact = [p for p in s.pools if not p.approximate and not p.per_request]
        if exact:
            cheapest = min(exact, key=lambda p: p.cost_per_hour / max(capacity_rps(p, s.tiers), 1e-9))
            spec = dataclasses.replace(cheapest, min_replicas=max(1, cheapest.min_replicas),
                                       replicas=max(1, cheapest.replicas))  # fmt: skip
            results["reactive"] = fluid(FluidConfig([spec], s.tiers, False, "utilisation", s.tick_s, s.seed,
                                                    "reactive"))  # fmt: skip
            notes.append(f"reactive: {cheapest.name}, autoscaled on utilisation alone")
    return {"results": results, "fixed_sizes": sizes, "notes": notes}
