"""The simulator on hand-checkable cases, its determinism, its traces and its baseline sizing."""

from pathlib import Path

import numpy as np
import pytest

from tierserve.profiler.profile import BatchTiming
from tierserve.scheduler.tiers import DEFAULT_TIERS, MissPolicy, Tier
from tierserve.sim import traces
from tierserve.sim.fleet import SimPoolSpec
from tierserve.sim.scenario import Scenario, _smallest, run_all
from tierserve.sim.simulator import SimConfig, SimResult, simulate
from tierserve.sim.traces import Trace

EXACT_10MS = {1: BatchTiming(10.0, 10.0, 10.0, 0.0, 0), 4: BatchTiming(10.0, 10.0, 10.0, 0.0, 0)}
TIERS = list(DEFAULT_TIERS)
NAMES = ("gold", "silver", "bronze")


def one_pool(replicas: int = 1, **kw: object) -> SimPoolSpec:
    return SimPoolSpec(
        "cpu",
        EXACT_10MS,
        cost_per_hour=3.6,
        replicas=replicas,
        min_replicas=replicas,
        max_replicas=replicas,
        max_batch_size=4,
        **kw,
    )  # type: ignore[arg-type]


def trace(arrivals: list[float], tiers: list[int]) -> Trace:
    return Trace(np.asarray(arrivals), np.asarray(tiers), NAMES)


def test_spaced_requests_take_exactly_their_service_time_and_cost_replica_hours() -> None:
    result = simulate(SimConfig([one_pool()], TIERS, autoscale="fixed"), trace([0.0, 1.0, 2.0], [0, 1, 2]))
    assert np.allclose(result.latency, 0.010)
    # 1 replica x 2.0 s at 3.6 $/h = 0.002 $.
    assert result.cost == pytest.approx(0.002)
    assert result.summary()["tiers"]["gold"]["attainment"] == 1.0


def test_simultaneous_requests_share_a_batch() -> None:
    result = simulate(SimConfig([one_pool()], TIERS, autoscale="fixed"), trace([0.0, 0.0, 0.0], [2, 2, 2]))
    # The first runs alone (the replica was idle), the next two wait for it and then share a batch.
    assert sorted(np.round(result.latency, 6)) == [0.01, 0.02, 0.02]


def test_gold_that_cannot_make_its_deadline_is_rejected_and_bronze_waits() -> None:
    tight = [Tier("gold", 0.015, 0, MissPolicy.REJECT), *DEFAULT_TIERS[1:]]
    t = trace([0.0] * 4 + [0.001], [2, 2, 2, 2, 0])  # four bronze fill the replica, then gold arrives
    result = simulate(SimConfig([one_pool()], tight, autoscale="fixed"), t)
    assert np.isnan(result.latency[4])  # gold: 10 ms wait + 10 ms service > 15 ms, rejected at once
    assert not np.isnan(result.latency[:4]).any()
    fifo = simulate(SimConfig([one_pool()], tight, honour_tiers=False, autoscale="fixed"), t)
    assert fifo.latency[4] > 0.015  # FIFO serves it late instead


def test_same_seed_same_result_and_different_seed_differs() -> None:
    noisy = {1: BatchTiming(10.0, 10.0, 12.0, 1.0, 0), 4: BatchTiming(20.0, 20.0, 24.0, 2.0, 0)}
    spec = SimPoolSpec(
        "cpu", noisy, cost_per_hour=1.0, replicas=2, min_replicas=1, max_replicas=4, max_batch_size=4
    )
    t = traces.poisson(100, 20, [0.2, 0.3, 0.5], NAMES, seed=3)
    runs = [simulate(SimConfig([spec], TIERS, seed=s), t) for s in (7, 7, 8)]
    assert runs[0].summary() == runs[1].summary()
    assert np.array_equal(runs[0].latency, runs[1].latency, equal_nan=True)
    assert not np.array_equal(runs[0].latency, runs[2].latency, equal_nan=True)


def test_autoscaler_adds_replicas_after_the_provisioning_delay() -> None:
    spec = SimPoolSpec("cpu", EXACT_10MS, cost_per_hour=1.0, replicas=1, min_replicas=1, max_replicas=8,
                       max_batch_size=4, provisioning_delay_s=30)  # fmt: skip
    t = traces.poisson(600, 120, [0.2, 0.3, 0.5], NAMES, seed=1)  # ~1.5x one replica's capacity
    result = simulate(SimConfig([spec], TIERS, tick_s=5), t)
    ready = [row["cpu"]["ready"] for row in result.timeline]
    first_growth = next(i for i, n in enumerate(ready) if n > 1)
    assert first_growth * 5 >= 30  # nothing is ready before the delay has passed
    assert max(ready) > 1


def test_traces_are_seeded_and_shaped() -> None:
    a = traces.poisson(50, 100, [1, 1], ("a", "b"), seed=1)
    assert len(a) == pytest.approx(5000, rel=0.05) and np.all(np.diff(a.arrivals) >= 0)
    assert np.array_equal(a.arrivals, traces.poisson(50, 100, [1, 1], ("a", "b"), seed=1).arrivals)
    day = traces.diurnal(100, 3600, [1], ("a",), period_s=3600, peak_to_trough=2, seed=1)
    counts, _ = np.histogram(day.arrivals, bins=12, range=(0, 3600))
    assert counts.max() / counts.min() == pytest.approx(2.0, rel=0.25)


def test_replay_reads_a_request_log(tmp_path: Path) -> None:
    log = tmp_path / "log.csv"
    log.write_text("arrival,model,tier\n10.5,m,gold\n10.0,m,bronze\n11,other,gold\n")
    t = traces.replay(log, NAMES, model="m")
    assert t.arrivals.tolist() == [0.0, 0.5] and t.tiers.tolist() == [2, 0]


def test_smallest_fleet_bisection() -> None:
    calls: list[int] = []

    def run(n: int) -> SimResult:
        calls.append(n)
        return n  # type: ignore[return-value]

    result, n = _smallest(run, lambda r: r >= 11, limit=100)  # type: ignore[operator]
    assert n == 11 and result == 11
    assert len(calls) <= 9


def test_baselines_run_beside_tierserve_on_the_same_trace() -> None:
    t = traces.poisson(200, 20, [0.2, 0.3, 0.5], NAMES, seed=2)
    spec = SimPoolSpec("cpu", EXACT_10MS, cost_per_hour=1.0, replicas=1, min_replicas=1, max_replicas=16,
                       max_batch_size=4)  # fmt: skip
    outcome = run_all(Scenario(t, TIERS, [spec], tick_s=5, seed=0))
    assert set(outcome["results"]) == {"tierserve", "cpu-fixed", "reactive"}
    fixed = outcome["results"]["cpu-fixed"].summary()["tiers"]["gold"]["attainment"]
    assert fixed >= 0.999 and outcome["fixed_sizes"]["cpu-fixed"] >= 1
