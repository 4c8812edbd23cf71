"""Scenario files for ``tierserve simulate`` and the baselines that run beside tierserve's policy.

A scenario (YAML) names a trace, the tiers (default gold/silver/bronze) and the pools::

    trace: {kind: diurnal, mean_rate: 100, duration_s: 14400, period_s: 14400, peak_to_trough: 2,
            mix: {gold: 0.2, silver: 0.3, bronze: 0.5}, seed: 1}
    pools: [...]            # see tierserve.sim.fleet
    tick_s: 10

Baselines, on the same trace, with first-come-first-served scheduling (no tiers, nothing rejected
early, as Triton, Ray Serve or KServe schedule):

* ``<pool>-fixed`` for every pool kind: a fixed fleet of only that kind, sized (by bisection on the
  replica count) to the smallest fleet that serves gold within target for >= 99.9% of requests;
  the cheapest of them that meets gold is the ``cheapest single-pool fleet`` tierserve is compared to
  (with a GPU pool among them, ``gpu-fixed`` is the all-GPU fleet);
* ``reactive``: the pool kind cheapest per item at full batches, autoscaled on utilisation alone (no
  SLO signal, no routing).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from tierserve.errors import InvalidInput
from tierserve.scheduler.tiers import DEFAULT_TIERS, Tier, TierTable
from tierserve.sim import traces
from tierserve.sim.fleet import SimPool, SimPoolSpec
from tierserve.sim.report import GOLD_GOAL
from tierserve.sim.simulator import SimConfig, SimResult, simulate
from tierserve.sim.traces import Trace

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Scenario:
    trace: Trace
    tiers: list[Tier]
    pools: list[SimPoolSpec]
    tick_s: float = 10.0
    seed: int = 0


def load_scenario(path: Path, *, seed: int | None = None) -> Scenario:
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise InvalidInput(f"cannot read scenario {path}: {exc}") from None
    if not isinstance(raw, Mapping) or "trace" not in raw or "pools" not in raw:
        raise InvalidInput(f"scenario {path} needs 'trace' and 'pools'")
    tiers = TierTable.from_config({"tiers": raw["tiers"]}).tiers if raw.get("tiers") else list(DEFAULT_TIERS)
    chosen_seed = seed if seed is not None else int(raw.get("seed", 0))
    trace = build_trace(raw["trace"], path.parent, chosen_seed)
    pools = [SimPoolSpec.from_mapping(p, path.parent) for p in raw["pools"]]
    return Scenario(trace, tiers, pools, float(raw.get("tick_s", 10.0)), chosen_seed)


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


def run_tierserve(s: Scenario) -> SimResult:
    return simulate(SimConfig(s.pools, s.tiers, True, "slo", s.tick_s, s.seed, "tierserve"), s.trace)


def cheapest_pool(pools: list[SimPoolSpec]) -> SimPoolSpec:
    def cost(spec: SimPoolSpec) -> float:
        return SimPool(spec, False, np.random.default_rng(0)).cost_per_item()

    return min(pools, key=cost)


def fixed(spec: SimPoolSpec, n: int) -> SimPoolSpec:
    return dataclasses.replace(spec, replicas=n, min_replicas=n, max_replicas=n, provisioning_delay_s=0.0)


def run_fixed_sized_for_gold(s: Scenario, spec: SimPoolSpec, name: str) -> tuple[SimResult, int]:
    """The smallest fixed fleet of ``spec`` whose FIFO service meets gold for >= 99.9% (bisection)."""

    def run(n: int) -> SimResult:
        return simulate(SimConfig([fixed(spec, n)], s.tiers, False, "fixed", s.tick_s, s.seed, name), s.trace)

    def meets(result: SimResult) -> bool:
        gold = min(s.tiers, key=lambda t: t.priority).name
        return bool(result.summary()["tiers"][gold]["attainment"] >= GOLD_GOAL)

    result, n = _smallest(run, meets, spec.max_replicas)
    log.info("%s: %d replicas", name, n)
    return result, n


def _smallest(
    run: Callable[[int], SimResult], meets: Callable[[SimResult], bool], limit: int
) -> tuple[SimResult, int]:
    lo, hi, best = 1, 1, None
    while True:  # grow until it meets the goal
        result = run(hi)
        if meets(result):
            best = (result, hi)
            break
        lo = hi + 1
        if hi >= limit:
            return result, hi  # cannot meet it within the pool's max: report the largest
        hi = min(limit, hi * 2)
    while lo < best[1]:
        mid = (lo + best[1]) // 2
        result = run(mid)
        if meets(result):
            best = (result, mid)
        else:
            lo = mid + 1
    return best


def run_reactive(s: Scenario, spec: SimPoolSpec) -> SimResult:
    config = SimConfig([spec], s.tiers, False, "utilisation", s.tick_s, s.seed, "reactive")
    return simulate(config, s.trace)


def run_all(s: Scenario, *, baselines: bool = True) -> dict[str, Any]:
    results = {"tierserve": run_tierserve(s)}
    sizes: dict[str, int] = {}
    if baselines:
        for spec in s.pools:
            name = f"{spec.name}-fixed"
            results[name], sizes[name] = run_fixed_sized_for_gold(s, spec, name)
        results["reactive"] = run_reactive(s, cheapest_pool(s.pools))
    return {"results": results, "fixed_sizes": sizes}
