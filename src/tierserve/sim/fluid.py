"""The fleet at a day's scale: a fluid model per tick, driven by the same planner as the live server.

A day at 2,000 requests per second is 170 million requests: too many to simulate one by one in
minutes, and the fleet's questions (how many replicas of which kind, when) are answered per tick.
Each tick of ``tick_s`` seconds:

1. replicas whose boot has ended become ready; spot replicas get interruption notices (a binomial
   draw per tick at the pool's rate) and leave ``interruption_notice_s`` later;
2. arrivals per tier (Poisson counts, or a real trace binned) are served as the router would:
   tiers in priority order, each into the pools cheapest per request first, up to what each pool's
   ready replicas sustain within target (``sim.planning.capacity_rps`` per replica per second);
   approximate pools take only tiers that accept them; per-request endpoints come last (dearest),
   and best effort pays no premium for them (it waits instead, as the router decides);
3. what no pool can take is rejected at once for tiers that reject late work, and queued (bounded)
   for best-effort tiers, served first in later ticks, within target only if it waited less than
   the tier's target;
4. replicas alive (booting included) cost their hourly price, endpoints their price per request;
5. every ``plan_interval_s`` the fleet planner observes the arrivals and its plan is applied: new
   replicas serve after their pool's provisioning delay; fewer cancel boots first.

Baselines run the same loop: ``fixed`` fleets (an interrupted spot replica is replaced when it is
taken, as an auto-scaling group does) and ``utilisation`` (the per-pool autoscaler on utilisation
alone). With ``honour_tiers`` off (first come, first served, as Triton, Ray Serve or KServe
schedule) nothing is rejected early: every tier queues in one FIFO backlog and is late if it waited.

A request served in the tick it arrived is within target: capacity is what replicas sustain with
every batch inside the tightest target's budget. ``tests/sim/test_fluid.py`` checks this against
the event-level simulator on an hour of traffic (cost within 2%, attainment within 0.1 point).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tierserve.autoscale.planner import PoolStatus
from tierserve.autoscale.policy import Autoscaler, PoolObservation, ScalingLimits
from tierserve.scheduler.tiers import Tier
from tierserve.sim.fleet import SimPoolSpec
from tierserve.sim.planning import capacity_rps, fleet_planner, service_means
from tierserve.sim.traces import CountTrace


@dataclass(frozen=True)
class FluidConfig:
    pools: list[SimPoolSpec]
    tiers: list[Tier]
    honour_tiers: bool = True
    autoscale: str = "plan"  # "plan" (tierserve's fleet planner), "utilisation" (reactive), "fixed"
    plan_interval_s: float = 30.0
    seed: int = 0
    name: str = "tierserve"


@dataclass
class FluidResult:
    name: str
    tier_names: tuple[str, ...]
    arrived: np.ndarray  # per tier
    in_target: np.ndarray
    rejected: np.ndarray
    cost_by_pool: dict[str, float]
    served_by_pool: dict[str, float]
    interruptions: int
    timeline: list[dict[str, Any]] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return int(self.arrived.sum())

    @property
    def cost(self) -> float:
        return sum(self.cost_by_pool.values())

    def summary(self) -> dict[str, Any]:
        tiers = {
            name: {
                "requests": int(self.arrived[k]),
                "attainment": float(self.in_target[k] / self.arrived[k]) if self.arrived[k] else 1.0,
                "rejected": float(self.rejected[k] / self.arrived[k]) if self.arrived[k] else 0.0,
            }
            for k, name in enumerate(self.tier_names)
        }
        return {
            "name": self.name,
            "requests": self.requests,
            "cost": round(self.cost, 4),
            "cost_per_1m_requests": round(self.cost / self.requests * 1e6, 4) if self.requests else 0.0,
            "cost_by_pool": {k: round(v, 4) for k, v in self.cost_by_pool.items()},
            "served_by_pool": {k: round(v) for k, v in self.served_by_pool.items()},
            "spot_interruptions": self.interruptions,
            "tiers": tiers,
        }


@dataclass
class _Pool:
    spec: SimPoolSpec
    capacity: float  # requests per second per replica (per slot for an endpoint)
    full_rate: float  # requests per second per replica at the largest batch: utilisation's yardstick
    ready: int
    starting: list[float] = field(default_factory=list)  # ready-at times
    leaving: list[float] = field(default_factory=list)  # leave-at times of noticed spot replicas
    cost: float = 0.0
    served: float = 0.0
    window_served: float = 0.0

    @property
    def alive(self) -> int:
        return self.ready + len(self.starting)


def simulate_fluid(
    config: FluidConfig, trace: CountTrace, progress: Callable[[float], None] | None = None
) -> FluidResult:
    return _Fluid(config, trace).run(progress)


class _Fluid:
    def __init__(self, config: FluidConfig, trace: CountTrace) -> None:
        self.config = config
        self.trace = trace
        by_name = {t.name: t for t in config.tiers}
        self.tiers = [by_name[n] for n in trace.tier_names]
        self.pools = []
        for spec in config.pools:
            means = service_means(spec)
            full = max(means) if means else 1
            full_rate = full / means[full] if means else 0.0
            self.pools.append(_Pool(spec, capacity_rps(spec, config.tiers), full_rate, spec.replicas))
        # The router's order: cheapest per request first.
        self.order = sorted(self.pools, key=_cost_per_request)
        owned = [_cost_per_request(p) for p in self.pools if not p.spec.per_request]
        self.cheapest_owned = min(owned, default=math.inf)
        self.rng = np.random.default_rng(config.seed)
        self.planner = fleet_planner(config.pools, config.tiers, config.plan_interval_s)
        self.reactive = Autoscaler(
            {s.name: ScalingLimits(min_replicas=s.min_replicas, max_replicas=s.max_replicas,
                                   provisioning_delay_s=s.provisioning_delay_s) for s in config.pools}
        )  # fmt: skip
        k = len(self.tiers)
        self.arrived = np.zeros(k)
        self.in_target = np.zeros(k)
        self.rejected = np.zeros(k)
        self.backlog: deque[list[Any]] = deque()  # [arrival time, per-tier counts (list)]
        self.interruptions = 0

    def run(self, progress: Callable[[float], None] | None) -> FluidResult:
        dt = self.trace.tick_s
        counts = self.trace.counts.astype(float)
        ticks = len(counts)
        every = max(1, round(self.config.plan_interval_s / dt))
        minute = max(1, round(60 / dt))
        window = np.zeros(len(self.tiers))
        timeline: list[dict[str, Any]] = []
        acc = _Minute(len(self.tiers))
        report_every = max(1, ticks // 100)
        for i in range(ticks):
            now = i * dt
            self._lifecycle(now, dt)
            arrivals = counts[i]
            window += arrivals
            spent = self._spent()
            ok = self._serve(now, dt, arrivals)
            self._pay(dt)
            acc.add(arrivals, ok, self._spent() - spent)
            if (i + 1) % every == 0 and self.config.autoscale != "fixed":
                self._scale(now + dt, window)
                window[:] = 0
            if (i + 1) % minute == 0 or i == ticks - 1:
                timeline.append(acc.row(now + dt, self.pools, dt))
                acc = _Minute(len(self.tiers))
            if progress is not None and i % report_every == 0:
                progress(i / ticks)
        self._drain()
        if progress is not None:
            progress(1.0)
        return FluidResult(
            self.config.name,
            self.trace.tier_names,
            self.arrived,
            self.in_target,
            self.rejected,
            {p.spec.name: p.cost for p in self.pools},
            {p.spec.name: p.served for p in self.pools},
            self.interruptions,
            timeline,
        )

    # -- one tick ------------------------------------------------------------------------------------

    def _lifecycle(self, now: float, dt: float) -> None:
        for pool in self.pools:
            if pool.starting and min(pool.starting) <= now:
                ready = [t for t in pool.starting if t <= now]
                pool.starting = [t for t in pool.starting if t > now]
                pool.ready += len(ready)
            if pool.leaving and min(pool.leaving) <= now:
                gone = sum(1 for t in pool.leaving if t <= now)
                pool.leaving = [t for t in pool.leaving if t > now]
                pool.ready -= gone
                if self.config.autoscale == "fixed":  # an auto-scaling group replaces what was taken
                    pool.starting += [now + pool.spec.provisioning_delay_s] * gone
            spec = pool.spec
            if spec.spot and spec.interruptions_per_hour > 0:
                exposed = pool.ready - len(pool.leaving)
                if exposed > 0:
                    hit = int(self.rng.binomial(exposed, min(1.0, spec.interruptions_per_hour * dt / 3600)))
                    if hit:
                        self.interruptions += hit
                        pool.leaving += [now + spec.interruption_notice_s] * hit

    def _serve(self, now: float, dt: float, arrivals: np.ndarray) -> np.ndarray:
        left = {id(p): p.ready * p.capacity * dt for p in self.order}
        ok = np.zeros(len(self.tiers))
        if not self.config.honour_tiers:
            self._serve_fifo(now, arrivals, left, ok)
            return ok
        # By tier priority (the scheduler's order); within a tier its queued work first (older deadlines).
        queued = [0.0] * len(self.tiers)
        for k in sorted(range(len(self.tiers)), key=lambda k: self.tiers[k].priority):
            for at, rows in self.backlog:
                if rows[k] > 0:
                    taken = self._place(k, rows[k], left)
                    rows[k] -= taken
                    if now - at < self.tiers[k].target_s:
                        self.in_target[k] += taken
            n = arrivals[k]
            if n <= 0:
                continue
            self.arrived[k] += n
            taken = self._place(k, n, left)
            ok[k] = taken
            self.in_target[k] += taken
            rest = n - taken
            if rest > 1e-9:
                if self.tiers[k].rejects_late:
                    self.rejected[k] += rest
                else:
                    queued[k] = rest
        while self.backlog and sum(self.backlog[0][1]) <= 1e-9:
            self.backlog.popleft()
        if sum(queued) > 0:
            self._enqueue(now, queued)
        return ok

    def _serve_fifo(self, now: float, arrivals: np.ndarray, left: dict[int, float], ok: np.ndarray) -> None:
        while self.backlog:
            at, rows = self.backlog[0]
            total = sum(rows)
            room = sum(left.values())
            share = min(1.0, room / total) if total else 1.0
            for k, n in enumerate(rows):
                taken = self._place(k, n * share, left)
                rows[k] -= taken
                if now - at < self.tiers[k].target_s:
                    self.in_target[k] += taken
            if sum(rows) > 1e-9:
                break
            self.backlog.popleft()
        self.arrived += arrivals
        total = float(arrivals.sum())
        room = sum(left.values())
        share = min(1.0, room / total) if total else 1.0
        queued = []
        for k, n in enumerate(arrivals):
            taken = self._place(k, n * share, left)
            ok[k] = taken
            self.in_target[k] += taken
            queued.append(n - taken)
        if sum(queued) > 1e-9:
            self._enqueue(now, queued)

    def _place(self, k: int, n: float, left: dict[int, float]) -> float:
        approximate_ok = self.tiers[k].approximate
        # As the router: work that may wait pays no premium for a rented per-request endpoint.
        deadline = self.config.honour_tiers and self.tiers[k].rejects_late
        taken = 0.0
        for pool in self.order:
            room = left[id(pool)]
            if room <= 0 or (pool.spec.approximate and not approximate_ok):
                continue
            if pool.spec.per_request and not deadline and _cost_per_request(pool) > self.cheapest_owned:
                continue
            take = min(room, n - taken)
            left[id(pool)] = room - take
            pool.served += take
            pool.window_served += take
            if pool.spec.per_request:
                pool.cost += take * pool.spec.cost_per_1k_requests / 1000
            taken += take
            if taken >= n - 1e-12:
                break
        return taken

    def _enqueue(self, now: float, rows: list[float]) -> None:
        bound = sum(p.spec.queue_capacity for p in self.pools if p.ready > 0)
        held = sum(sum(r) for _, r in self.backlog)
        room = max(0.0, bound - held)
        total = sum(rows)
        if total > room:  # over the bound: the newest are turned away
            keep = room / total
            for k, n in enumerate(rows):
                self.rejected[k] += n * (1 - keep)
            rows = [n * keep for n in rows]
        if sum(rows) > 0:
            self.backlog.append([now, rows])

    def _pay(self, dt: float) -> None:
        for pool in self.pools:
            if pool.spec.cost_per_hour:
                pool.cost += pool.alive * pool.spec.cost_per_hour * dt / 3600

    def _spent(self) -> float:
        return sum(p.cost for p in self.pools)

    def _drain(self) -> None:
        """What is still queued at the end is counted late (it is served after its target)."""
        self.backlog.clear()

    # -- control -------------------------------------------------------------------------------------

    def _scale(self, now: float, window: np.ndarray) -> None:
        if self.config.autoscale == "plan":
            self.planner.observe(dict(zip(self.trace.tier_names, window.tolist(), strict=True)))
            status = {p.spec.name: PoolStatus(p.ready, len(p.starting), len(p.leaving)) for p in self.pools}
            plan = self.planner.plan(now, status)
            for pool in self.pools:
                if not pool.spec.per_request:
                    self._resize(pool, plan.pools[pool.spec.name].desired, now)
        else:
            interval = self.config.plan_interval_s
            for pool in self.pools:
                used = pool.window_served / pool.full_rate if pool.full_rate else 0.0
                utilisation = min(1.0, used / (max(pool.ready, 1) * interval))
                obs = PoolObservation(pool.spec.name, pool.ready, len(pool.starting), utilisation)
                rec = self.reactive.recommend(obs, now)
                self._resize(pool, rec.desired, now)
        for pool in self.pools:
            pool.window_served = 0.0

    def _resize(self, pool: _Pool, desired: int, now: float) -> None:
        current = pool.alive
        if desired > current:
            pool.starting += [now + pool.spec.provisioning_delay_s] * (desired - current)
        elif desired < current:
            drop = current - desired
            while drop and pool.starting:
                pool.starting.remove(max(pool.starting))
                drop -= 1
            pool.ready -= drop
            # Noticed spot replicas go first: they leave anyway.
            del pool.leaving[: min(drop, len(pool.leaving))]


def _cost_per_request(pool: _Pool) -> float:
    spec = pool.spec
    if spec.per_request or not pool.capacity:
        return spec.cost_per_1k_requests / 1000 + (math.inf if not pool.capacity else 0.0)
    return spec.cost_per_hour / (pool.capacity * 3600) + spec.cost_per_1k_requests / 1000


class _Minute:
    def __init__(self, tiers: int) -> None:
        self.arrived = np.zeros(tiers)
        self.ok = np.zeros(tiers)
        self.cost = 0.0

    def add(self, arrivals: np.ndarray, ok: np.ndarray, cost: float) -> None:
        self.arrived += arrivals
        self.ok += ok
        self.cost += cost

    def row(self, t: float, pools: Sequence[_Pool], dt: float) -> dict[str, Any]:
        seconds = max(dt, 60.0)
        return {
            "t": round(t, 3),
            "arrival_rate": round(float(self.arrived.sum()) / seconds, 2),
            "cost_per_hour": round(self.cost * 3600 / seconds, 4),
            "attainment": [
                round(float(o / a), 5) if a else 1.0 for o, a in zip(self.ok, self.arrived, strict=True)
            ],
            "pools": {p.spec.name: {"ready": p.ready, "starting": len(p.starting)} for p in pools},
        }
