"""The live side of autoscaling: observe pools every tick, ask the pure policy, publish and act.

Every ``interval_s`` each pool is observed (utilisation from the replicas' busy time, p95 latency and
queue delay of the deadline-bound tiers against their targets) and the policy's recommendation is
published as ``tierserve_desired_replicas{pool}`` (what KEDA or an HPA scales on, see deploy/) and on
``GET /v1/autoscale``. With ``actuate``, local CPU pools are resized in place: replica threads with
their own ONNX Runtime sessions are added or retired, bounded by the host's cores.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import asdict
from functools import partial
from typing import Any

import numpy as np

from tierserve.autoscale.policy import Autoscaler, PoolObservation, Recommendation, ScalingLimits
from tierserve.backends.onnx import OnnxBackend, OnnxOptions
from tierserve.engine.engine import Engine, available_cores
from tierserve.engine.runner import ModelRunner
from tierserve.observability.metrics import Metrics

log = logging.getLogger(__name__)


class LiveAutoscaler:
    def __init__(self, engine: Engine, metrics: Metrics, *, actuate: bool, interval_s: float = 5.0) -> None:
        self.engine = engine
        self.metrics = metrics
        self.actuate = actuate
        self.interval_s = interval_s
        cores = available_cores()
        self.policy = Autoscaler(
            {p.name: ScalingLimits(min_replicas=1, max_replicas=cores if p.local else 64, cooldown_s=15,
                                   down_after_s=60) for p in engine.pools}
        )  # fmt: skip
        self.latest: dict[str, tuple[Recommendation, PoolObservation]] = {}
        self._last_tick = time.monotonic()

    def tick(self, now: float) -> list[Recommendation]:
        elapsed = max(1e-3, now - self._last_tick)
        self._last_tick = now
        deadline_tiers = [t for t in self.engine.tiers.tiers if t.rejects_late]
        targets = {t.name: t.target_s for t in deadline_tiers}
        tightest = min(targets.values(), default=1.0)
        priorities = {t.priority for t in deadline_tiers}
        recommendations = []
        for pool in self.engine.pools:
            runners = self._runners(pool.name)
            if not runners:
                continue
            obs = _observe(pool.name, runners, elapsed, targets, tightest, priorities)
            rec = self.policy.recommend(obs, now)
            self.metrics.desired_replicas.labels(pool.name).set(rec.desired)
            self.latest[pool.name] = (rec, obs)
            recommendations.append(rec)
        return recommendations

    def apply(self, recommendations: list[Recommendation]) -> None:
        """Resize local CPU pools to their recommendation (other pools are scaled from outside)."""
        for rec in recommendations:
            pool = next(p for p in self.engine.pools if p.name == rec.pool)
            if pool.kind not in ("onnx-cpu", "onnx-cpu-int8") or rec.desired == rec.current:
                continue
            threads = max(1, available_cores() // max(1, rec.desired))
            for runner in self._runners(pool.name):
                template = runner.backends[0]
                if not isinstance(template, OnnxBackend):
                    continue
                log.info(
                    "autoscale: %s on %s %d -> %d replicas", runner.name, pool.name, rec.current, rec.desired
                )
                make = partial(OnnxBackend, template.path, OnnxOptions(intra_op_threads=threads))
                runner.resize(rec.desired, make)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            recommendations = self.tick(time.monotonic())
            if self.actuate:
                await asyncio.to_thread(self.apply, recommendations)

    def describe(self) -> dict[str, Any]:
        return {
            "interval_s": self.interval_s,
            "actuate": self.actuate,
            "pools": [
                {"pool": rec.pool, "current": rec.current, "desired": rec.desired,
                 "reasons": list(rec.reasons), "observation": asdict(obs)}
                for rec, obs in self.latest.values()
            ],
        }  # fmt: skip

    def _runners(self, pool: str) -> list[ModelRunner]:
        return [d.runners[pool] for d in self.engine.deployments() if pool in d.runners]


def _observe(
    pool: str,
    runners: list[ModelRunner],
    elapsed: float,
    targets: dict[str, float],
    tightest: float,
    deadline_priorities: set[int],
) -> PoolObservation:
    busy = 0.0
    latencies: list[tuple[str, float]] = []
    oldest = 0.0
    for runner in runners:
        b, lat = runner.take_window()
        busy += b
        latencies += lat
        depths, age = runner.queue_snapshot()
        if any(depths.get(p, 0) for p in deadline_priorities):  # best-effort backlog is no SLO signal
            oldest = max(oldest, age or 0.0)
    replicas = max(r.replicas for r in runners)
    # Models of one pool share its replicas' cores: their busy time adds up.
    utilisation = min(1.0, busy / (replicas * elapsed))
    p95_ratio = 0.0
    for tier, target in targets.items():
        mine = [s for t, s in latencies if t == tier]
        if len(mine) >= 5:
            p95_ratio = max(p95_ratio, float(np.percentile(mine, 95)) / target)
    return PoolObservation(pool, replicas, 0, utilisation, p95_ratio, oldest / tightest)
