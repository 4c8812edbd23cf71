"""The discrete-event loop: arrivals, batch ends, replica boots and autoscaler ticks, in virtual time.

Per arrival it does what the server does, through the same ``scheduler.admission`` functions: a
ticket with the deadline fixed at arrival, every pool's ``PoolOption`` (``BatchQueue.predict_finish``
over the pool's replicas), the router's pick, the queue entry in the pool's ``BatchQueue``; then it
starts batches on idle replicas with the live ``next_batch`` (which also drops what can no longer
make its deadline, and cuts a batch only when no other replica frees up within gold's slack).
Every ``tick_s`` the live ``Autoscaler`` sees each pool and its recommendation is applied, new
replicas serving only after their pool's provisioning delay. Same inputs and seed, same result.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tierserve.autoscale.observation import observe_pool
from tierserve.autoscale.planner import PoolStatus
from tierserve.autoscale.policy import Autoscaler, PoolObservation, ScalingLimits
from tierserve.scheduler import admission
from tierserve.scheduler.batching import QueueFull
from tierserve.scheduler.tiers import Tier, TierChoice
from tierserve.sim.fleet import SimPool, SimPoolSpec, hourly_cost
from tierserve.sim.planning import fleet_planner
from tierserve.sim.traces import Trace

_COMPLETE, _WAKE, _READY, _TICK = range(4)


@dataclass(frozen=True)
class SimConfig:
    pools: list[SimPoolSpec]
    tiers: list[Tier]
    honour_tiers: bool = True  # False: FIFO, nothing rejected early (the baselines' scheduling)
    # "plan" (tierserve's fleet planner), "slo" (the per-pool SLO autoscaler), "utilisation"
    # (reactive baseline), "fixed"
    autoscale: str = "slo"
    tick_s: float = 10.0
    seed: int = 0
    name: str = "tierserve"


@dataclass
class SimResult:
    name: str
    requests: int
    latency: np.ndarray  # seconds; NaN when rejected
    tiers: np.ndarray
    tier_names: tuple[str, ...]
    targets: tuple[float, ...]
    pool_of: np.ndarray  # pool index per request, -1 when rejected
    pool_names: tuple[str, ...]
    cost: float
    cost_by_pool: dict[str, float]
    timeline: list[dict[str, Any]] = field(default_factory=list)
    utilisation: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        per_tier = {}
        for i, name in enumerate(self.tier_names):
            mine = self.tiers == i
            n = int(mine.sum())
            lat = self.latency[mine]
            served = lat[~np.isnan(lat)]
            per_tier[name] = {
                "requests": n,
                "attainment": float((served <= self.targets[i]).sum() / n) if n else 1.0,
                "rejected": float(np.isnan(lat).sum() / n) if n else 0.0,
                "p50_ms": float(np.percentile(served, 50) * 1000) if len(served) else None,
                "p99_ms": float(np.percentile(served, 99) * 1000) if len(served) else None,
            }
        served_by_pool = {p: int((self.pool_of == i).sum()) for i, p in enumerate(self.pool_names)}
        return {
            "name": self.name,
            "requests": self.requests,
            "cost": round(self.cost, 6),
            "cost_per_1m_requests": round(self.cost / self.requests * 1e6, 4) if self.requests else 0.0,
            "cost_by_pool": {k: round(v, 6) for k, v in self.cost_by_pool.items()},
            "served_by_pool": served_by_pool,
            "utilisation": {k: round(v, 4) for k, v in self.utilisation.items()},
            "tiers": per_tier,
        }


def simulate(config: SimConfig, trace: Trace, progress: Callable[[float], None] | None = None) -> SimResult:
    """``progress`` hears the share of the trace done at every autoscaling tick, and 1.0 at the end."""
    return _Simulation(config, trace, progress).run()


class _Simulation:
    def __init__(
        self, config: SimConfig, trace: Trace, progress: Callable[[float], None] | None = None
    ) -> None:
        self.progress = progress
        self.config = config
        self.trace = trace
        rng = np.random.default_rng(config.seed)
        self.pools = [SimPool(spec, np.random.default_rng(rng.integers(2**63))) for spec in config.pools]
        by_name = {t.name: t for t in config.tiers}
        self.tiers = [by_name[name] for name in trace.tier_names]
        self.choices = [TierChoice(t, t.target_s) for t in self.tiers]
        n = len(trace)
        self.latency = np.full(n, np.nan)
        self.pool_of = np.full(n, -1, dtype=np.int32)
        self.events: list[tuple[float, int, int, int, Any]] = []
        self.seq = itertools.count()
        limits = {
            spec.name: ScalingLimits(min_replicas=spec.min_replicas, max_replicas=spec.max_replicas,
                                     provisioning_delay_s=spec.provisioning_delay_s)
            for spec in config.pools
        }  # fmt: skip
        self.autoscaler = Autoscaler(limits)
        self.planner = fleet_planner(config.pools, config.tiers, config.tick_s)
        self.window_by_tier = np.zeros(len(trace.tier_names))
        self.window_latency: list[list[tuple[int, float]]] = [[] for _ in self.pools]
        self.timeline: list[dict[str, Any]] = []
        self.window_arrivals = 0
        self.pool_index = {pool.spec.name: k for k, pool in enumerate(self.pools)}

    def push(self, time: float, kind: int, pool: int, payload: Any = None) -> None:
        heapq.heappush(self.events, (time, next(self.seq), kind, pool, payload))

    def run(self) -> SimResult:
        arrivals, tiers = self.trace.arrivals, self.trace.tiers
        end = self.trace.duration_s
        if self.config.autoscale != "fixed":
            self.push(self.config.tick_s, _TICK, -1)
        i, n = 0, len(arrivals)
        events = self.events
        while i < n or events:
            if i < n and (not events or arrivals[i] <= events[0][0]):
                self.arrive(i, float(arrivals[i]), int(tiers[i]))
                i += 1
                continue
            time, _, kind, p, payload = heapq.heappop(events)
            if kind == _COMPLETE:
                self.complete(p, payload, time)
            elif kind == _WAKE:
                self.dispatch(p, time)
            elif kind == _READY:
                self.pools[p].replica_ready(payload, time)
                self.dispatch(p, time)
            elif kind == _TICK and (i < n or any(len(p.queue) for p in self.pools)):
                self.tick(time)
                if self.progress is not None and end > 0:
                    self.progress(min(0.999, time / end))
                if time < end:
                    self.push(time + self.config.tick_s, _TICK, -1)
        stop = max(end, max((p.alive_since for p in self.pools), default=0.0))
        for pool in self.pools:
            pool.account(stop)
        if self.progress is not None:
            self.progress(1.0)
        costs = {p.spec.name: hourly_cost(p) for p in self.pools}
        return SimResult(
            name=self.config.name,
            requests=n,
            latency=self.latency,
            tiers=tiers,
            tier_names=self.trace.tier_names,
            targets=tuple(t.target_s for t in self.tiers),
            pool_of=self.pool_of,
            pool_names=tuple(p.spec.name for p in self.pools),
            cost=sum(costs.values()),
            cost_by_pool=costs,
            timeline=self.timeline,
            utilisation={p.spec.name: p.busy_seconds / p.replica_seconds if p.replica_seconds else 0.0
                         for p in self.pools},
        )  # fmt: skip

    # -- events ----------------------------------------------------------------------------------

    def arrive(self, index: int, now: float, tier_index: int) -> None:
        self.window_arrivals += 1
        self.window_by_tier[tier_index] += 1
        p = self.admit(index, now, tier_index)
        if p is not None:
            self.dispatch(p, now)

    def admit(self, index: int, now: float, tier_index: int) -> int | None:
        """Admission of request ``index`` arriving at ``now``: the pool it is queued on, or None when
        rejected (at once, or by a full queue: its latency stays NaN)."""
        t = admission.ticket(self.choices[tier_index], now, honour_tiers=self.config.honour_tiers)
        options = [o for o in (pool.option(t, now) for pool in self.pools) if o is not None]
        route = admission.route(options, t, now)
        if route.pool is None:
            return None
        p = self.pool_index[route.pool]
        try:
            self.pools[p].queue.push(admission.pending(t, index, None), now)  # an evicted one stays NaN
        except QueueFull:
            return None
        return p

    def dispatch(self, p: int, now: float) -> None:
        pool = self.pools[p]
        while pool.idle > 0 and len(pool.queue):
            step = pool.queue.next_batch(now, pool.others_free_at(now))
            if step.batch is None:
                if step.wake_at is not None:
                    self.push(step.wake_at, _WAKE, p)
                return
            indices = [item.payload for item in step.batch.items]
            end = pool.start_batch(now, step.batch.rows)
            pool.requests += len(indices)
            self.push(end, _COMPLETE, p, indices)

    def complete(self, p: int, indices: list[int], now: float) -> None:
        pool = self.pools[p]
        pool.finish_batch()
        arrivals = self.trace.arrivals
        window = self.window_latency[p]
        for index in indices:
            latency = now - float(arrivals[index])
            self.latency[index] = latency
            self.pool_of[index] = p
            window.append((int(self.trace.tiers[index]), latency))
        self.dispatch(p, now)

    def tick(self, now: float) -> None:
        row: dict[str, Any] = {"t": round(now, 3), "arrival_rate": self.window_arrivals / self.config.tick_s}
        self.window_arrivals = 0
        deadline = {i: t.target_s for i, t in enumerate(self.tiers) if t.rejects_late}
        observations = []
        for p, pool in enumerate(self.pools):
            oldest = pool.queue.oldest_arrival()
            obs = observe_pool(
                pool.spec.name,
                ready=pool.ready,
                starting=len(pool.starting),
                capacity_used_s=pool.window_busy,
                elapsed_s=self.config.tick_s,
                latencies=self.window_latency[p],
                targets=deadline,
                oldest_wait_s=None if oldest is None else now - oldest,
            )
            pool.window_busy = 0.0
            self.window_latency[p] = []
            row[pool.spec.name] = {
                "ready": obs.ready,
                "starting": obs.starting,
                "utilisation": round(obs.utilisation, 3),
                "p95_ratio": round(obs.p95_ratio, 3),
            }
            if self.config.autoscale == "utilisation":  # the reactive baseline looks at utilisation only
                obs = PoolObservation(obs.pool, obs.ready, obs.starting, obs.utilisation)
            observations.append(obs)
        if self.config.autoscale == "plan":
            desired = self._plan(now)
        else:
            desired = [self.autoscaler.recommend(obs, now).desired for obs in observations]
        for p, pool in enumerate(self.pools):
            if desired[p] != pool.ready + len(pool.starting) and not pool.spec.per_request:
                for ready_at in pool.scale_to(desired[p], now):
                    self.push(ready_at, _READY, p, ready_at)
            row[pool.spec.name]["desired"] = desired[p]
        self.timeline.append(row)

    def _plan(self, now: float) -> list[int]:
        """The fleet planner's replicas per pool from this window's arrivals per tier."""
        self.planner.observe(dict(zip(self.trace.tier_names, self.window_by_tier.tolist(), strict=True)))
        self.window_by_tier[:] = 0
        status = {p.spec.name: PoolStatus(p.ready, len(p.starting)) for p in self.pools}
        plan = self.planner.plan(now, status)
        return [plan.pools[p.spec.name].desired for p in self.pools]
