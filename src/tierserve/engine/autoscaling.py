"""The live side of autoscaling: the fleet planner every tick, the per-pool SLO loop inside it, and
the local actuator.

Every ``interval_s``:

1. the arrivals per tier since the last tick (every model's request counts) feed the planner's
   forecast;
2. each pool becomes a ``PlanPool``: one replica's capacity within the tightest target of the tiers
   it serves, from the live service-time estimate of each model on it (weighted by each model's
   share of the arrivals); its price; local pools share this host's cores (``hosts``);
   a rented endpoint billed per request is an always-warm pool of ``concurrency`` slots per endpoint;
3. the planner decides replicas per pool (``autoscale.planner``), and the per-pool SLO autoscaler
   (``autoscale.policy``, fed through the same observation path as the simulator's,
   ``autoscale.observation``) is its fast inner loop: SLO pressure on a pool, or a pool saturated
   (utilisation above ``SATURATED``: arrivals from clients waiting on it understate the demand),
   raises its count at once, whatever the plan says;
4. the decision is published as ``tierserve_desired_replicas{pool}`` (what KEDA or an HPA scales
   on) and on ``GET /v1/autoscale`` with the plan's reasons; with ``actuate``, local CPU pools are
   resized in place (replica threads, each with its own ONNX Runtime session; the host's cores
   divided among the local replicas planned).

A local pool keeps one replica: a runner with none could not drain what is queued on it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

from tierserve.autoscale.capacity import replica_capacity, slot_capacity
from tierserve.autoscale.forecast import LoadForecast
from tierserve.autoscale.observation import observe_pool
from tierserve.autoscale.planner import FleetPlan, FleetPlanner, PlanPool, PlanTier, PoolStatus
from tierserve.autoscale.policy import Autoscaler, PoolObservation, ScalingLimits
from tierserve.backends.onnx import OnnxBackend, OnnxOptions
from tierserve.backends.wide import own_session
from tierserve.engine.engine import Engine, available_cores
from tierserve.engine.pools import PoolSpec
from tierserve.engine.runner import ModelRunner
from tierserve.observability.metrics import Metrics

log = logging.getLogger(__name__)

HOST = "local"
SATURATED = 0.9


@dataclass(frozen=True)
class PoolReport:
    pool: str
    current: int
    desired: int
    reasons: tuple[str, ...]
    observation: PoolObservation
    capacity_rps: float
    planned_rps: float


class LiveAutoscaler:
    def __init__(self, engine: Engine, metrics: Metrics, *, actuate: bool, interval_s: float = 5.0) -> None:
        self.engine = engine
        self.metrics = metrics
        self.actuate = actuate
        self.interval_s = interval_s
        self.cores = available_cores()
        tiers = engine.tiers.tiers
        self.planner = FleetPlanner(
            [],
            [PlanTier(t.name, t.approximate, not t.rejects_late, t.target_s) for t in tiers],
            LoadForecast(interval_s=interval_s),
            hosts={HOST: float(self.cores)},
            down_after_s=max(10.0, 10 * interval_s),
        )
        self.inner = Autoscaler(
            {p.name: ScalingLimits(min_replicas=1, max_replicas=self._max(p), cooldown_s=15, down_after_s=60)
             for p in engine.pools}
        )  # fmt: skip
        self.latest: dict[str, PoolReport] = {}
        self.plan: FleetPlan | None = None
        self._seen: dict[tuple[str, int], dict[str, int]] = {}
        self._last_tick = time.monotonic()

    def tick(self, now: float) -> list[PoolReport]:
        elapsed = max(1e-3, now - self._last_tick)
        self._last_tick = now
        arrivals, by_model = self._arrivals()
        self.planner.observe({k: v * self.interval_s / elapsed for k, v in arrivals.items()})
        deadline = {t.name: t.target_s for t in self.engine.tiers.tiers if t.rejects_late}
        priorities = {t.priority for t in self.engine.tiers.tiers if t.rejects_late}
        pools, status, observed = [], {}, {}
        for pool in self.engine.pools:
            runners = self._runners(pool.name)
            if not runners:
                continue
            pools.append(self._plan_pool(pool, runners, by_model))
            replicas = max(r.replicas for r in runners)
            status[pool.name] = PoolStatus(replicas)
            observed[pool.name] = _observe(pool.name, replicas, runners, elapsed, deadline, priorities)
        self.planner.pools = pools
        plan = self.planner.plan(now, status)
        self.plan = plan
        reports = []
        for spec in pools:
            decision = plan.pools[spec.name]
            obs = observed[spec.name]
            inner = self.inner.recommend(obs, now)
            desired, reasons = decision.desired, list(decision.reasons)
            limits = self.inner.limits[spec.name]
            pressure = obs.p95_ratio > limits.up_at or obs.queue_ratio > limits.queue_share
            if (pressure or obs.utilisation > SATURATED) and inner.desired > desired and not spec.per_request:
                desired = min(inner.desired, spec.max_replicas)
                reasons += [f"inner loop: {r}" for r in inner.reasons]
            report = PoolReport(spec.name, decision.current, desired, tuple(reasons), obs, spec.capacity_rps,
                                decision.planned_rps)  # fmt: skip
            self.metrics.desired_replicas.labels(spec.name).set(desired)
            if spec.capacity_rps > 0:
                self.metrics.pool_demand.labels(spec.name).set(decision.planned_rps / spec.capacity_rps)
            self.latest[spec.name] = report
            reports.append(report)
        return reports

    def apply(self, reports: list[PoolReport]) -> None:
        """Resize local CPU pools to their decision (other pools are scaled from outside)."""
        local = [r for r in reports if self._pool(r.pool).host_cores]
        planned = sum(r.desired for r in local) or 1
        threads = max(1, self.cores // planned)  # the host's cores, shared by every local replica
        for report in local:
            if report.desired == report.current:
                continue
            for runner in self._runners(report.pool):
                template = own_session(runner.backends[0])  # not the pool's shared wide session
                if not isinstance(template, OnnxBackend):
                    continue
                log.info("autoscale: %s on %s %d -> %d replicas (%d threads each)", runner.name, report.pool,
                         report.current, report.desired, threads)  # fmt: skip
                make = partial(OnnxBackend, template.path, OnnxOptions(intra_op_threads=threads))
                runner.resize(report.desired, make)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            reports = self.tick(time.monotonic())
            if self.actuate:
                await asyncio.to_thread(self.apply, reports)

    def describe(self) -> dict[str, Any]:
        plan = self.plan
        return {
            "interval_s": self.interval_s,
            "actuate": self.actuate,
            "host_cores": self.cores,
            "plan": None if plan is None else {
                "forecast_rps": {k: round(v, 3) for k, v in plan.forecast_rps.items()},
                "cost_per_hour": plan.cost_per_hour,
                "reasons": list(plan.reasons),
            },
            "pools": [
                {"pool": r.pool, "current": r.current, "desired": r.desired, "reasons": list(r.reasons),
                 "capacity_rps": round(r.capacity_rps, 3), "planned_rps": round(r.planned_rps, 3),
                 "observation": asdict(r.observation)}
                for r in self.latest.values()
            ],
        }  # fmt: skip

    # -- helpers -------------------------------------------------------------------------------------

    def _arrivals(self) -> tuple[dict[str, float], dict[tuple[str, int], float]]:
        """Requests per tier since the last tick, and per model version."""
        per_tier: dict[str, float] = {t.name: 0.0 for t in self.engine.tiers.tiers}
        per_model: dict[tuple[str, int], float] = {}
        for d in self.engine.deployments():
            key = (d.name, d.version)
            counts = d.stats.tier_counts()
            before = self._seen.get(key, {})
            self._seen[key] = counts
            for tier, n in counts.items():
                new = max(0, n - before.get(tier, 0))
                per_tier[tier] = per_tier.get(tier, 0.0) + new
                per_model[key] = per_model.get(key, 0.0) + new
        return per_tier, per_model

    def _plan_pool(
        self, pool: PoolSpec, runners: list[ModelRunner], by_model: dict[tuple[str, int], float]
    ) -> PlanPool:
        # The tightest target among the tiers that arrive (all of them before any has) and may use it.
        mix = self.planner.forecast.mix()
        tiers = [t for t in self.engine.tiers.tiers if (t.approximate or not pool.approximate)
                 and (not mix or mix.get(t.name, 0.0) > 0)]  # fmt: skip
        tightest = min((t.target_s for t in tiers), default=1.0)
        rtt = pool.rtt_ms / 1000
        per_request = not pool.local and pool.cost_per_1k_requests > 0 and not pool.cost_per_hour
        capacities = []
        for runner in runners:
            if not runner.estimator.known:
                continue
            means = {b: runner.estimator.mean(b) for b in _batch_sizes(runner.max_batch_size)}
            cap = (
                slot_capacity(means, rtt_s=rtt)
                if per_request
                else replica_capacity(means, tightest, rtt_s=rtt)
            )
            capacities.append((by_model.get((runner.name, runner.version), 0.0), cap))
        capacity = _blend(capacities)
        local = pool.host_cores
        plan = PlanPool(
            pool.name,
            capacity,
            cost_per_hour=pool.cost_per_hour,
            cost_per_1k_requests=pool.cost_per_1k_requests,
            min_replicas=1 if local else 0,
            max_replicas=self._max(pool),
            approximate=pool.approximate,
            per_request=per_request,
            host=HOST if local else None,
        )
        return self.engine.budgeting.plan_pool(plan)  # free-tier quotas first, spent budgets shut

    def _max(self, pool: PoolSpec) -> int:
        if not pool.local:
            return pool.concurrency * max(1, len(pool.endpoints))
        return self.cores if pool.host_cores else 64

    def _pool(self, name: str) -> PoolSpec:
        return next(p for p in self.engine.pools if p.name == name)

    def _runners(self, pool: str) -> list[ModelRunner]:
        return [d.runners[pool] for d in self.engine.deployments() if pool in d.runners]


def _batch_sizes(limit: int) -> list[int]:
    sizes, b = [], 1
    while b <= max(1, limit):
        sizes.append(b)
        b *= 2
    return sizes


def _blend(capacities: list[tuple[float, float]]) -> float:
    """One replica's capacity over the models it serves: the harmonic mean weighted by each model's
    arrivals (time is what they share), or the smallest when none arrived."""
    known = [(w, c) for w, c in capacities if c > 0]
    if not known:
        return 0.0
    total = sum(w for w, _ in known)
    if total <= 0:
        return min(c for _, c in known)
    return total / sum(w / c for w, c in known)


def _observe(
    pool: str,
    replicas: int,
    runners: list[ModelRunner],
    elapsed: float,
    deadline: dict[str, float],
    deadline_priorities: set[int],
) -> PoolObservation:
    busy = 0.0
    latencies: list[tuple[str, float]] = []
    oldest: float | None = None
    for runner in runners:
        b, lat = runner.take_window()
        busy += b
        latencies += lat
        depths, age = runner.queue_snapshot()
        if age is not None and any(
            depths.get(p, 0) for p in deadline_priorities
        ):  # best effort: no SLO signal
            oldest = max(oldest or 0.0, age)
    # Models of one pool share its replicas' cores: their capacity used adds up.
    return observe_pool(pool, ready=replicas, starting=0, capacity_used_s=busy, elapsed_s=elapsed,
                        latencies=latencies, targets=deadline, oldest_wait_s=oldest)  # fmt: skip
