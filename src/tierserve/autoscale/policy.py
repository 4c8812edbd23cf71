"""Replica recommendations per pool from SLO pressure and utilisation, with hysteresis.

Each tick the caller observes every pool (replicas ready and starting, utilisation, the p95 latency
and the worst queue delay of its deadline-bound tiers relative to their targets) and asks for a
recommendation. Per pool:

* **Scale up** at once when the SLO is under pressure (p95 above ``up_at`` of the target, or queue
  delay above ``queue_share`` of it) or utilisation is above ``target_utilisation``: to the larger
  of the replicas that would bring utilisation to its target and the current count times ``1 +
  up_step`` (at least one more). Replicas still starting count as present, so a pool with a long
  provisioning delay (a rented GPU: minutes) is not asked for more again and again while they boot.
* **Scale down** only after ``down_after_s`` of no pressure with utilisation below
  ``down_utilisation``, one cooldown at a time, and never below what keeps utilisation under target.
* Between the two thresholds nothing changes (hysteresis); ``min_replicas`` and ``max_replicas``
  clamp every answer; ``cooldown_s`` separates changes of one pool.

Example::

    scaler = Autoscaler({"cpu": ScalingLimits(min_replicas=1, max_replicas=8)})
    rec = scaler.recommend(PoolObservation("cpu", ready=2, starting=0, utilisation=0.95,
                                           p95_ratio=1.3, queue_ratio=0.5), now=100.0)
    rec.desired  # 3 (or more), with rec.reasons saying why
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ScalingLimits:
    min_replicas: int = 1
    max_replicas: int = 8
    provisioning_delay_s: float = 0.0  # from asking to serving: ~0 for a thread, minutes for a GPU VM
    target_utilisation: float = 0.7
    down_utilisation: float = 0.35
    up_at: float = 0.8  # p95 / target above this is pressure
    queue_share: float = 0.5  # queue delay / target above this is pressure
    up_step: float = 0.5
    cooldown_s: float = 30.0
    down_after_s: float = 120.0


@dataclass(frozen=True)
class PoolObservation:
    pool: str
    ready: int
    starting: int
    # Capacity used over the last window, 0..1: rows served x replica-seconds per row at the largest
    # batch, over ready replica-seconds. Time busy would overstate it for batching replicas.
    utilisation: float
    p95_ratio: float = 0.0  # worst p95 latency / target over deadline-bound tiers on this pool
    queue_ratio: float = 0.0  # worst queue delay / target


@dataclass(frozen=True)
class Recommendation:
    pool: str
    current: int  # ready + starting
    desired: int
    reasons: tuple[str, ...]

    @property
    def change(self) -> int:
        return self.desired - self.current


@dataclass
class _PoolState:
    last_change: float = -math.inf
    calm_since: float | None = None


@dataclass
class Autoscaler:
    limits: dict[str, ScalingLimits]
    _state: dict[str, _PoolState] = field(default_factory=dict)

    def recommend(self, obs: PoolObservation, now: float) -> Recommendation:
        lim = self.limits.get(obs.pool, ScalingLimits())
        state = self._state.setdefault(obs.pool, _PoolState())
        current = obs.ready + obs.starting
        pressure = obs.p95_ratio > lim.up_at or obs.queue_ratio > lim.queue_share
        hot = obs.utilisation > lim.target_utilisation
        # Replicas that bring utilisation to target.
        needed = math.ceil(obs.utilisation * obs.ready / lim.target_utilisation) if obs.ready else 0
        if pressure or hot:
            state.calm_since = None
            desired, reasons = _up(obs, lim, state, current, needed, pressure, now)
        else:
            state.calm_since = now if state.calm_since is None else state.calm_since
            desired, reasons = _down(obs, lim, state, current, needed, now)
        clamped = min(lim.max_replicas, max(lim.min_replicas, desired))
        if clamped != desired:
            reasons.append(f"clamped to [{lim.min_replicas}, {lim.max_replicas}]")
        if clamped != current:
            state.last_change = now
        return Recommendation(obs.pool, current, clamped, tuple(reasons))


def _up(
    obs: PoolObservation,
    lim: ScalingLimits,
    state: _PoolState,
    current: int,
    needed: int,
    pressure: bool,
    now: float,
) -> tuple[int, list[str]]:
    reasons = []
    if pressure:
        reasons.append(
            f"SLO pressure: p95 at {obs.p95_ratio:.0%} of target, queue delay at {obs.queue_ratio:.0%}"
        )
    if obs.utilisation > lim.target_utilisation:
        reasons.append(f"utilisation {obs.utilisation:.0%} above target {lim.target_utilisation:.0%}")
    if obs.starting and not pressure:
        reasons.append(f"{obs.starting} replica(s) still starting: waiting for them")
        return current, reasons
    if pressure:  # SLO pressure does not wait out the cooldown
        return max(needed, current + 1, math.ceil(current * (1 + lim.up_step))), reasons
    if now - state.last_change < lim.cooldown_s:
        reasons.append("in cooldown after the last change")
        return current, reasons
    return max(needed, current + 1), reasons


def _down(
    obs: PoolObservation, lim: ScalingLimits, state: _PoolState, current: int, needed: int, now: float
) -> tuple[int, list[str]]:
    calm_for = now - (state.calm_since if state.calm_since is not None else now)
    cold = obs.utilisation < lim.down_utilisation
    if (
        cold
        and calm_for >= lim.down_after_s
        and not obs.starting
        and now - state.last_change >= lim.cooldown_s
    ):
        desired = max(needed, current - 1)
        if desired < current:
            return desired, [
                f"utilisation {obs.utilisation:.0%} below {lim.down_utilisation:.0%} for {calm_for:.0f} s"
            ]
    return current, ["within the hysteresis band: no change"]
