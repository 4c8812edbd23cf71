"""The fleet planner as the simulators see a fleet: ``PlanPool``s from simulated pool specs.

Both the event-level simulator and the fluid one build their planner here, so they plan from the
same capacities: a replica pool's capacity is what one replica sustains within the tightest target
of the tiers it may serve (``autoscale.capacity``); a per-request endpoint's is one request at a
time per slot.
"""

from __future__ import annotations

from collections.abc import Sequence

from tierserve.autoscale.capacity import replica_capacity, slot_capacity
from tierserve.autoscale.forecast import LoadForecast
from tierserve.autoscale.planner import FleetPlanner, PlanPool, PlanTier
from tierserve.scheduler.tiers import Tier
from tierserve.sim.fleet import SimPoolSpec


def service_means(spec: SimPoolSpec) -> dict[int, float]:
    """Mean service time in seconds per batch size, up to the pool's largest batch."""
    top = max(1, spec.max_batch_size)
    return {rows: t.mean_ms / 1000 for rows, t in spec.profile.items() if rows <= top}


def capacity_rps(spec: SimPoolSpec, tiers: Sequence[Tier]) -> float:
    """Requests per second one replica (or endpoint slot) of ``spec`` sustains within its tightest target."""
    means = service_means(spec)
    if spec.per_request:
        return slot_capacity(means, rtt_s=spec.rtt_ms / 1000)
    served = [t for t in tiers if t.approximate or not spec.approximate]
    tightest = min((t.target_s for t in served), default=1.0)
    return replica_capacity(means, tightest, rtt_s=spec.rtt_ms / 1000)


def plan_pool(spec: SimPoolSpec, tiers: Sequence[Tier]) -> PlanPool:
    return PlanPool(
        spec.name,
        capacity_rps(spec, tiers),
        cost_per_hour=spec.cost_per_hour,
        cost_per_1k_requests=spec.cost_per_1k_requests,
        provisioning_delay_s=spec.provisioning_delay_s,
        min_replicas=spec.min_replicas,
        max_replicas=spec.max_replicas,
        approximate=spec.approximate,
        per_request=spec.per_request,
        spot=spec.spot,
        interruptions_per_hour=spec.interruptions_per_hour,
    )


def fleet_planner(specs: Sequence[SimPoolSpec], tiers: Sequence[Tier], interval_s: float) -> FleetPlanner:
    return FleetPlanner(
        [plan_pool(s, tiers) for s in specs],
        [PlanTier(t.name, t.approximate, not t.rejects_late, t.target_s) for t in tiers],
        LoadForecast(interval_s=interval_s),
    )
