"""A rollout in virtual time for the policy tests: traffic drawn from latency distributions, the
controller checked every ``check_interval_s`` as the live service does. Requests are generated one
check interval at a time (numpy draws); the split's hashing is tested on its own, so each request's
arm is a draw at the rollout's weight here."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tierserve.rollout import ArmWindow, Mode, Phase, Rollout, RolloutPlan, evaluate, start

TIERS = ("gold", "silver", "bronze")
TIER_SHARES = (0.3, 0.3, 0.4)
TIER_TARGETS_S = (0.050, 0.150, 1.0)


@dataclass
class Arm:
    latencies: Sequence[float]  # drawn from, uniformly
    error_rate: float = 0.0
    slowdown: float = 1.0  # latency multiplier


def run(
    plan: RolloutPlan,
    stable: Arm,
    candidate: Arm,
    *,
    seed: int,
    rate: float = 200.0,
    horizon_s: float = 900.0,
) -> tuple[Rollout, float | None]:
    """Run until the rollout ends or ``horizon_s``; return it and the time of its first candidate request."""
    rng = np.random.default_rng(seed)
    arms = {
        1: (stable, np.asarray(stable.latencies)),
        plan.candidate: (candidate, np.asarray(candidate.latencies)),
    }
    rollout = start("m", plan, stable=1, now=0.0, rollout_id=f"sim-{seed}")
    windows = {1: ArmWindow(), plan.candidate: ArmWindow()}
    epoch = rollout.epoch
    first_candidate: float | None = None
    now = 0.0
    interval = plan.check_interval_s
    while now < horizon_s and rollout.phase is Phase.STEPPING:
        n = int(rng.poisson(rate * interval))
        share = rng.random(n) * 100 < rollout.weight
        counts = {plan.candidate: int(share.sum())}
        # shadow: stable serves everything and the candidate a copy of its share
        counts[1] = n if plan.mode is Mode.SHADOW else n - counts[plan.candidate]
        if counts[plan.candidate] and first_candidate is None:
            first_candidate = now + interval * float(np.argmax(share)) / max(1, n)
        for version, count in counts.items():
            arm, pool = arms[version]
            tiers = rng.choice(3, size=count, p=TIER_SHARES)
            latencies = pool[rng.integers(0, len(pool), size=count)] * arm.slowdown
            failed = rng.random(count) < arm.error_rate
            window = windows[version]
            for tier, latency, fail in zip(tiers.tolist(), latencies.tolist(), failed.tolist(), strict=True):
                outcome = "failed" if fail else ("met" if latency <= TIER_TARGETS_S[tier] else "missed")
                window.observe(TIERS[tier], latency, outcome, cost=1e-6)
        now += interval
        rollout, _ = evaluate(rollout, windows[1], windows[plan.candidate], now)
        if rollout.epoch != epoch:
            epoch = rollout.epoch
            windows = {1: ArmWindow(), plan.candidate: ArmWindow()}
    return rollout, first_candidate


def synthetic_latencies(seed: int = 7, n: int = 5000) -> list[float]:
    """A server-like shape: a log-normal body around 2 ms with a 3% tail five times slower."""
    rng = np.random.default_rng(seed)
    body = rng.lognormal(-6.2, 0.3, size=n)
    return (body * np.where(rng.random(n) < 0.03, 5.0, 1.0)).tolist()
