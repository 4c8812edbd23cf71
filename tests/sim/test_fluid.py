"""The fluid model per tick: hand-checkable ticks, spot interruptions under the planner, and its
agreement with the event-level simulator on an hour of the fleet-day scenario."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from tierserve.profiler.profile import BatchTiming
from tierserve.scheduler.tiers import DEFAULT_TIERS, MissPolicy, Tier
from tierserve.sim import traces
from tierserve.sim.fleet import SimPoolSpec
from tierserve.sim.fluid import FluidConfig, simulate_fluid
from tierserve.sim.scenario import load_scenario
from tierserve.sim.simulator import SimConfig, simulate
from tierserve.sim.traces import CountTrace

ROOT = Path(__file__).resolve().parents[2]
TIERS = list(DEFAULT_TIERS)
NAMES = ("gold", "silver", "bronze")
# 10 ms at batch 1 and at batch 4: within gold's 20 ms batch budget a replica sustains 4 / 10 ms = 400/s.
FLAT_10MS = {1: BatchTiming(10.0, 10.0, 10.0, 0.0, 0), 4: BatchTiming(10.0, 10.0, 10.0, 0.0, 0)}


def pool(replicas: int = 1, **kw: object) -> SimPoolSpec:
    values: dict[str, object] = {"cost_per_hour": 3.6, "replicas": replicas, "min_replicas": replicas,
                                 "max_replicas": replicas, "max_batch_size": 4, **kw}  # fmt: skip
    return SimPoolSpec("cpu", FLAT_10MS, **values)  # type: ignore[arg-type]


def counts(per_tick: list[tuple[int, int, int]]) -> CountTrace:
    return CountTrace(np.asarray(per_tick, dtype=np.int64), 1.0, NAMES)


def test_load_within_capacity_is_served_in_target_and_pays_replica_seconds() -> None:
    result = simulate_fluid(FluidConfig([pool()], TIERS, autoscale="fixed"), counts([(100, 100, 100)] * 10))
    summary = result.summary()
    assert all(t["attainment"] == 1.0 for t in summary["tiers"].values())
    assert result.cost == pytest.approx(0.01)  # 1 replica x 10 s x $3.6/h


def test_overload_rejects_deadline_tiers_by_priority_and_queues_best_effort() -> None:
    # 400/s of capacity, 300 gold + 200 silver + 100 bronze per second: gold all served, silver gets
    # the remaining 100, bronze waits (and is late: it waited a whole tick, over its 1 s target).
    result = simulate_fluid(FluidConfig([pool()], TIERS, autoscale="fixed"), counts([(300, 200, 100)] * 4))
    tiers = result.summary()["tiers"]
    assert tiers["gold"]["attainment"] == 1.0
    assert tiers["silver"]["attainment"] == pytest.approx(0.5) and tiers["silver"]["rejected"] == 0.5
    assert tiers["bronze"]["attainment"] == 0.0 and tiers["bronze"]["rejected"] == 0.0


def test_first_come_first_served_shares_the_shortfall_across_tiers() -> None:
    config = FluidConfig([pool()], TIERS, honour_tiers=False, autoscale="fixed")
    result = simulate_fluid(config, counts([(300, 200, 300)] * 2))
    gold = result.summary()["tiers"]["gold"]
    assert gold["rejected"] == 0.0 and gold["attainment"] == pytest.approx(0.5 * 400 / 800, abs=0.01)


def test_spot_interruptions_under_the_planner_never_cost_gold() -> None:
    scenario = load_scenario(ROOT / "deploy/sim/fleet-day.yaml")
    pools = [dataclasses.replace(p, interruptions_per_hour=3.0) if p.spot else p for p in scenario.pools]
    rate = traces.day_rate(1500, 7200, 1.0, peak_to_trough=1.0, seed=2)
    trace = traces.counts_from_rate(rate, 1.0, [0.2, 0.3, 0.5], NAMES, seed=2)
    result = simulate_fluid(FluidConfig(pools, TIERS, plan_interval_s=30.0, seed=2), trace)
    summary = result.summary()
    assert result.interruptions >= 2
    assert summary["tiers"]["gold"]["attainment"] == 1.0
    assert summary["tiers"]["silver"]["attainment"] == 1.0


def test_the_fluid_model_agrees_with_the_event_level_simulator_on_an_hour() -> None:
    """Hour 6-7 of the fleet-day scenario (rising load), its rate scaled to 0.8% so the event-level run
    takes seconds, spot interruptions off (the event-level simulator has none): the same planner runs
    in both. Cost within 2%, attainment per tier within 0.1 point."""
    scenario = load_scenario(ROOT / "deploy/sim/fleet-day.yaml")
    pools = [dataclasses.replace(p, interruptions_per_hour=0.0) for p in scenario.pools]
    rate = traces.day_rate(2000 * 0.008, 86_400, 1.0, peak_to_trough=3, seed=3)[6 * 3600 : 7 * 3600]
    trace = traces.arrivals_from_rate(rate, 1.0, [0.2, 0.3, 0.5], NAMES, seed=3)
    event = simulate(SimConfig(pools, TIERS, True, "plan", 30.0, 0, "event"), trace).summary()
    fluid = simulate_fluid(
        FluidConfig(pools, TIERS, True, "plan", 30.0, 0), CountTrace.from_trace(trace, 1.0, 3600.0)
    ).summary()
    assert fluid["cost"] == pytest.approx(event["cost"], rel=0.02), (event, fluid)
    for tier in NAMES:
        assert abs(fluid["tiers"][tier]["attainment"] - event["tiers"][tier]["attainment"]) <= 0.001


def test_the_fluid_model_agrees_with_the_event_level_simulator_while_the_planner_scales() -> None:
    """An hour whose load rises from 3 to 15 requests/s and falls back, on a pool of small replicas
    (150 ms a request, one at a time: 6.7 requests/s each within targets of 0.5, 1 and 5 s) that boot
    in 60 s: the planner opens and retires replicas through the hour in both simulators. Cost within
    2%, attainment within 0.1 point."""
    tiers = [
        Tier("gold", 0.5, 0, MissPolicy.REJECT),
        Tier("silver", 1.0, 1, MissPolicy.REJECT),
        Tier("bronze", 5.0, 2, MissPolicy.BEST_EFFORT, approximate=True),
    ]
    slow = {1: BatchTiming(150.0, 150.0, 150.0, 0.0, 0)}
    spec = SimPoolSpec("small", slow, cost_per_hour=1.0, replicas=1, min_replicas=1, max_replicas=20,
                       max_batch_size=1, provisioning_delay_s=60)  # fmt: skip
    t = np.arange(3600.0)
    rate = 3 + 12 * np.sin(np.pi * t / 3600)
    trace = traces.arrivals_from_rate(rate, 1.0, [0.2, 0.3, 0.5], NAMES, seed=5)
    event = simulate(SimConfig([spec], tiers, True, "plan", 30.0, 0, "event"), trace)
    fluid = simulate_fluid(
        FluidConfig([spec], tiers, True, "plan", 30.0, 0), CountTrace.from_trace(trace, 1.0, 3600)
    )
    replicas = [row["small"]["ready"] for row in event.timeline]
    assert replicas[0] == 1 and replicas[-1] < max(replicas) and max(replicas) >= 3  # up and back down
    e, f = event.summary(), fluid.summary()
    assert f["cost"] == pytest.approx(e["cost"], rel=0.02), (e, f)
    for tier in NAMES:
        assert abs(f["tiers"][tier]["attainment"] - e["tiers"][tier]["attainment"]) <= 0.001, (e, f)
