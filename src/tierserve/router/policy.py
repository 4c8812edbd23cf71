"""Pool choice: the cheapest pool predicted to meet the deadline with a margin.

For each candidate pool the caller supplies the predicted finish (queue wait ahead + service time of
the batch the request would join + network round trip), the cost of one item there, its load, and
whether its variant is approximate (e.g. int8). The policy:

1. keeps pools whose breaker allows traffic and whose variant the tier accepts; a best-effort
   request (one that may be served late) leaves out rented endpoints (billed per request) dearer
   per item than the cheapest owned pool: a premium is paid for deadlines, not for work that may
   wait;
2. keeps those predicted to finish by ``deadline - margin``;
3. picks the lowest cost per item, then the least loaded, then the earliest finish.

None fits: a tier that rejects late work gets a rejection naming the best prediction; a best-effort
tier goes to the cheapest pool (then the one predicted to finish first): it will be late wherever it
goes. (Measured: on one core at 2x its capacity, bronze sent to the fastest pool, or to the rented
endpoint as the only pool predicted in time, made the endpoint 90-98% of the routed set-up's cost.)

Example::

    options = [PoolOption("cpu", predicted_finish=0.040, cost_per_item=1e-6),
               PoolOption("burst", predicted_finish=0.012, cost_per_item=5e-5)]
    choose_pool(options, now=0.0, deadline=0.050, margin_s=0.005, reject_late=True).pool  # "cpu"
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class PoolOption:
    pool: str
    predicted_finish: float  # absolute time on the caller's clock
    cost_per_item: float
    load: float = 0.0  # queued rows per replica: the tie-breaker
    approximate: bool = False
    available: bool = True  # the pool's circuit breaker allows a request now
    rented: bool = False  # billed per request (a rented endpoint), not owned by the hour


@dataclass(frozen=True)
class Route:
    pool: str | None  # None: reject
    predicted_finish: float
    reason: str


def choose_pool(
    options: Sequence[PoolOption],
    *,
    now: float,
    deadline: float,
    margin_s: float,
    reject_late: bool,
    allow_approximate: bool = True,
) -> Route:
    usable = [o for o in options if o.available and (allow_approximate or not o.approximate)]
    owned = [o.cost_per_item for o in usable if not o.rented]
    if not reject_late and owned:  # best effort pays no premium to be on time
        usable = [o for o in usable if not o.rented or o.cost_per_item <= min(owned)]
    if not usable:
        why = "every pool's circuit breaker is open" if options else "no pool serves this model"
        return Route(None, math.inf, why)
    feasible = [o for o in usable if o.predicted_finish <= deadline - margin_s]
    if feasible:
        best = min(feasible, key=lambda o: (o.cost_per_item, o.load, o.predicted_finish))
        return Route(best.pool, best.predicted_finish, "cheapest pool predicted to meet the deadline")
    fastest = min(usable, key=lambda o: (o.predicted_finish, o.cost_per_item))
    if reject_late:
        return Route(
            None,
            fastest.predicted_finish,
            f"no pool is predicted to meet the deadline: predicted completion in "
            f"{(fastest.predicted_finish - now) * 1000:.0f} ms at best (pool '{fastest.pool}')",
        )
    cheapest = min(usable, key=lambda o: (o.cost_per_item, o.predicted_finish))
    return Route(cheapest.pool, cheapest.predicted_finish, "best effort: late anywhere, so the cheapest pool")


def retry_order(
    options: Sequence[PoolOption],
    *,
    failed: set[str],
    now: float,
    deadline: float,
    margin_s: float,
    reject_late: bool,
    allow_approximate: bool = True,
) -> Route:
    """The route for a retry after the pools in ``failed`` failed this request."""
    remaining = [o for o in options if o.pool not in failed]
    route = choose_pool(
        remaining,
        now=now,
        deadline=deadline,
        margin_s=margin_s,
        reject_late=reject_late,
        allow_approximate=allow_approximate,
    )
    if route.pool is None and remaining:
        return Route(None, route.predicted_finish, f"retry budget spent: {route.reason}")
    return route
