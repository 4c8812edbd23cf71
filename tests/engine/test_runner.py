"""The live adapter of admission (ModelRunner + Engine._pick) and the simulator's (SimPool +
_Simulation.admit) fed the same arrivals make the same decisions: same pool or same rejection, same
predicted finish. Live runners run a real ONNX model; the clock is virtual and the replicas are held
busy (their lock held), so that both sides see the same queue at every arrival."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import numpy as np
import onnx
import pytest

from tierserve.backends.onnx import OnnxBackend, OnnxOptions
from tierserve.engine.deployment import Deployment
from tierserve.engine.engine import Engine
from tierserve.engine.pools import PoolSpec
from tierserve.engine.runner import ModelRunner
from tierserve.errors import Unavailable
from tierserve.examples.basic import build_identity
from tierserve.observability.metrics import Metrics
from tierserve.observability.stats import ModelStats
from tierserve.profiler.profile import BatchTiming
from tierserve.repository.repository import ModelRepository
from tierserve.scheduler import admission
from tierserve.scheduler.service_time import ServiceTimeEstimator
from tierserve.scheduler.tiers import DEFAULT_TIERS, TierChoice
from tierserve.sim.fleet import SimPoolSpec
from tierserve.sim.simulator import SimConfig, _Simulation
from tierserve.sim.traces import Trace

# (rows, mean ms, spread ms) of one batch, on both sides.
PROFILE = [(1, 4.0, 0.5), (8, 10.0, 1.0), (32, 30.0, 2.0)]
POOLS = [
    PoolSpec("cpu", "onnx-cpu", replicas=2, cost_per_hour=0.2),
    PoolSpec("rented", "onnx-cpu", replicas=1, cost_per_1k_requests=0.05, rtt_ms=2.0),
]
BUSY_UNTIL = {"cpu": [0.060, 0.090], "rented": [0.020]}  # every replica busy at first


def estimator() -> ServiceTimeEstimator:
    est = ServiceTimeEstimator()
    for rows, mean, dev in PROFILE:
        est.seed(rows, mean / 1000, dev / 1000)
    return est


def arrivals() -> tuple[np.ndarray, np.ndarray]:
    """A burst well beyond what the pools hold: gold, silver and bronze, 0.1 ms apart."""
    rng = np.random.default_rng(3)
    return np.arange(1500) * 0.0001, rng.choice(3, size=1500, p=[0.3, 0.3, 0.4])


def simulated_decisions(times: np.ndarray, tiers: np.ndarray) -> list[str | None]:
    profile = {rows: BatchTiming(mean, mean, mean + dev, dev, 100) for rows, mean, dev in PROFILE}
    specs = [
        SimPoolSpec(p.name, profile, cost_per_hour=p.cost_per_hour,
                    cost_per_1k_requests=p.cost_per_1k_requests, rtt_ms=p.rtt_ms, replicas=p.replicas or 1,
                    max_batch_size=32)
        for p in POOLS
    ]  # fmt: skip
    trace = Trace(times, tiers, ("gold", "silver", "bronze"))
    sim = _Simulation(SimConfig(specs, list(DEFAULT_TIERS), autoscale="fixed"), trace)
    for pool in sim.pools:
        pool.idle, pool.busy = 0, sorted(BUSY_UNTIL[pool.spec.name])
    decisions = []
    for i, (at, tier) in enumerate(zip(times, tiers, strict=True)):
        p = sim.admit(i, float(at), int(tier))
        decisions.append(None if p is None else sim.pools[p].spec.name)
    return decisions


def live_decisions(tmp_path: Path, times: np.ndarray, tiers: np.ndarray) -> list[str | None]:
    model = tmp_path / "models" / "identity" / "1" / "model.onnx"
    model.parent.mkdir(parents=True)
    build_identity(model, onnx.TensorProto.FLOAT)
    now = [0.0]
    metrics = Metrics()
    stats = ModelStats()

    def backends(pool: PoolSpec) -> list[OnnxBackend]:
        return [OnnxBackend(model, OnnxOptions(intra_op_threads=1)) for _ in range(pool.replicas or 1)]

    runners = {
        pool.name: ModelRunner(
            "identity", 1, backends(pool),
            pool=pool, max_batch_size=32, max_queue_delay_s=0.0, max_queue_size=100_000, stats=stats,
            metrics=metrics.for_model("identity", 1, pool.name), estimator=estimator(), clock=lambda: now[0],
        )
        for pool in POOLS
    }  # fmt: skip
    engine = Engine(ModelRepository(tmp_path / "models"), metrics, pools=POOLS)
    engine.data.clock = lambda: now[0]
    deployment = Deployment("identity", 1, runners, stats)
    feeds = {"INPUT0": np.zeros((1, 4), dtype=np.float32)}
    decisions: list[str | None] = []
    futures: list[asyncio.Future[object]] = []

    async def admit_all() -> None:
        for runner in runners.values():
            runner._cond.acquire()  # the replicas stay busy: nothing leaves the queues meanwhile
            runner._busy_until[:] = BUSY_UNTIL[runner.pool.name]
        try:
            for at, tier in zip(times, tiers, strict=True):
                now[0] = float(at)
                tier_choice = TierChoice(DEFAULT_TIERS[tier], DEFAULT_TIERS[tier].target_s)
                t = admission.ticket(tier_choice, float(at), 1)
                try:
                    runner = engine.data.pick(deployment, t, set())
                except Unavailable:
                    decisions.append(None)
                    continue
                futures.append(runner.submit(feeds, (4,), t))  # type: ignore[arg-type]
                decisions.append(runner.pool.name)
        finally:
            for runner in runners.values():
                runner._busy_until[:] = [-float("inf")] * len(runner._busy_until)
                runner._cond.release()
        for runner in runners.values():
            await asyncio.to_thread(runner.stop)
        await asyncio.gather(*futures, return_exceptions=True)  # served, or dropped as too late

    asyncio.run(admit_all())
    return decisions


def test_the_live_and_the_simulated_adapters_admit_the_same_arrivals_alike(tmp_path: Path) -> None:
    times, tiers = arrivals()
    live = live_decisions(tmp_path, times, tiers)
    simulated = simulated_decisions(times, tiers)
    assert live == simulated
    # The burst exercised every decision: both pools, and rejections of each deadline tier.
    assert {"cpu", "rented", None} <= set(live)
    rejected = {int(t) for t, d in zip(tiers, live, strict=True) if d is None}
    assert rejected == {0, 1}, rejected  # bronze (best effort) is never rejected early
    assert len(live) == len(times)


def test_with_debug_logging_each_batch_says_its_rows_cap_and_what_set_the_cap(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model = tmp_path / "identity.onnx"
    build_identity(model, onnx.TensorProto.FLOAT)
    metrics = Metrics()
    pool = PoolSpec("cpu", "onnx-cpu", replicas=1)
    runner = ModelRunner(
        "identity", 1, [OnnxBackend(model, OnnxOptions(intra_op_threads=1))],
        pool=pool, max_batch_size=32, max_queue_delay_s=0.0, max_queue_size=100, stats=ModelStats(),
        metrics=metrics.for_model("identity", 1, "cpu"), estimator=estimator(),
    )  # fmt: skip
    gold = DEFAULT_TIERS[0]

    async def one() -> object:
        t = admission.ticket(TierChoice(gold, gold.target_s), runner._clock(), 1)
        return await runner.submit({"INPUT0": np.zeros((1, 4), dtype=np.float32)}, (4,), t)

    with caplog.at_level(logging.DEBUG, logger="tierserve.engine.runner"):
        asyncio.run(one())
        runner.stop()
    lines = [r.getMessage() for r in caplog.records if "batch of" in r.getMessage()]
    assert len(lines) == 1
    # One replica with gold active: gold's wait bound (45 ms less 5 ms for its own row and 5 for one
    # more) still allows 32 rows (34 ms predicted), a full batch, and the line says so.
    assert "identity v1 cpu r0: batch of 1 rows (cap 32, full); head tier gold waited" in lines[0]
    assert "other replicas free in [] ms; 0 dropped" in lines[0]
