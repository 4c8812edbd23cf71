"""Admission: the one pure step per request that the live engine and the simulator both call.

A request is admitted once, at arrival, into a :class:`Ticket`: its tier, its arrival, its budget
and so its deadline (``arrival + budget``), fixed there and carried through every retry, so that a
request retried on another pool keeps the deadline it arrived with and its queue ordering counts
from arrival, not from the attempt. Then, per attempt:

* :func:`option` predicts when the request would finish on one pool (the pool's ``BatchQueue``
  over its replicas' free times, plus the network round trip) and what one item costs there
  (:func:`cost_per_item`), as the router's :class:`~tierserve.router.policy.PoolOption`;
* :func:`route` lets the router pick the cheapest pool predicted to finish by the deadline less
  the routing margin (:data:`ROUTING_MARGIN` of the budget), or none (reject early), or, after
  failures, the next pool while the deadline allows;
* :func:`pending` builds the queue entry from the ticket (priority, the arrival-fixed deadline,
  whether late work is dropped).

Adapters supply only what differs between a live pool and a simulated one: how they read their
replicas' free times (``-inf`` or ``now`` for an idle replica) and their clock. Example::

    t = ticket(TierChoice(gold, 0.050), arrival=now, rows=1)
    options = [option(p.name, p.queue, t, now, p.free_at, p.price, replicas=p.replicas) for p in pools]
    decision = route(options, t, now)        # decision.pool is None: reject (503 + Retry-After)
    queue.push(pending(t, payload, batch_key), now)
"""

from __future__ import annotations

from collections.abc import Collection, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from tierserve.router.policy import PoolOption, Route, choose_pool, retry_order
from tierserve.scheduler.batching import BatchQueue, Pending
from tierserve.scheduler.tiers import ROUTING_MARGIN, Tier, TierChoice

T = TypeVar("T")

__all__ = [
    "ROUTING_MARGIN",
    "PoolPrice",
    "Ticket",
    "cost_per_item",
    "option",
    "pending",
    "route",
    "ticket",
]


@dataclass(frozen=True)
class Ticket:
    """A request as admission sees it: fixed once at arrival, carried through every attempt."""

    tier: Tier
    arrival: float
    budget_s: float
    rows: int = 1
    honour_tiers: bool = True  # False: FIFO (no priority, nothing dropped or rejected for lateness)
    client_timeout: bool = False  # the budget is the client's own ``timeout``, not the tier's target
    best_effort: bool = False  # served best effort whatever its tier says (e.g. a tenant over budget)

    @property
    def deadline(self) -> float:
        return self.arrival + self.budget_s

    @property
    def priority(self) -> int:
        return self.tier.priority if self.honour_tiers else 0

    @property
    def reject_late(self) -> bool:
        return self.honour_tiers and self.tier.rejects_late and not self.best_effort

    @property
    def margin_s(self) -> float:
        return ROUTING_MARGIN * self.budget_s


def ticket(
    choice: TierChoice, arrival: float, rows: int = 1, *, honour_tiers: bool = True, best_effort: bool = False
) -> Ticket:
    """Admit a request of ``rows`` rows at its arrival: its deadline is fixed here, once."""
    timeout = choice.client_timeout
    return Ticket(choice.tier, arrival, choice.budget_s, rows, honour_tiers, timeout, best_effort)


def pending(t: Ticket, payload: T, batch_key: Hashable) -> Pending[T]:
    """The queue entry for ``t``: its priority and its arrival-fixed deadline (FIFO: neither)."""
    item = Pending(payload=payload, rows=t.rows, batch_key=batch_key, arrival=t.arrival)
    if t.honour_tiers:
        item.priority, item.deadline, item.reject_late = t.priority, t.deadline, t.reject_late
    return item


@dataclass(frozen=True)
class PoolPrice:
    """What a pool charges and adds, whatever runs it."""

    cost_per_hour: float = 0.0  # one replica
    cost_per_1k_requests: float = 0.0  # a rented endpoint
    rtt_s: float = 0.0  # network round trip, added to every prediction
    approximate: bool = False  # an approximate variant (e.g. int8): only for tiers that accept it


def cost_per_item(queue: BatchQueue[Any], price: PoolPrice, rows: int = 1) -> float:
    """What one item costs on this pool: the replica's price per second times its share of a full batch
    (the batching is work-conserving, so a loaded replica runs full batches), plus the price per
    request of a rented endpoint."""
    cost = price.cost_per_1k_requests / 1000
    if price.cost_per_hour and queue.estimator.known:
        batch = max(rows, queue.full_rows)
        cost += price.cost_per_hour / 3600 * queue.estimator.mean(batch) / batch
    return cost


def option(
    name: str,
    queue: BatchQueue[Any],
    t: Ticket,
    now: float,
    replicas_free_at: Sequence[float],
    price: PoolPrice,
    *,
    replicas: int,
    available: bool = True,
) -> PoolOption:
    """Pool ``name`` as the router sees it for ``t`` at ``now``: predicted finish, cost, and load
    (queued requests per replica, the tie-breaker). ``replicas_free_at`` may list only the replicas
    that free up first (a large fleet's idle ones, say): the batches ahead of ``t`` go to those."""
    probe: Pending[None] = Pending(payload=None, rows=t.rows, batch_key=None, arrival=t.arrival)
    probe.priority, probe.reject_late, probe.deadline = t.priority, t.reject_late, t.deadline
    finish = queue.predict_finish(probe, now, replicas_free_at) + price.rtt_s
    load = len(queue) / max(1, replicas)
    rented = price.cost_per_1k_requests > 0 and not price.cost_per_hour
    return PoolOption(
        name, finish, cost_per_item(queue, price, t.rows), load, price.approximate, available, rented
    )


def route(options: Sequence[PoolOption], t: Ticket, now: float, failed: Collection[str] = ()) -> Route:
    """The pool for this attempt: the cheapest predicted to finish by the deadline less the margin;
    after failures (``failed``), the next such pool. ``Route.pool`` None: reject."""
    if failed:
        return retry_order(
            options, failed=set(failed), now=now, deadline=t.deadline, margin_s=t.margin_s,
            reject_late=t.reject_late, allow_approximate=t.tier.approximate,
        )  # fmt: skip
    return choose_pool(
        options, now=now, deadline=t.deadline, margin_s=t.margin_s, reject_late=t.reject_late,
        allow_approximate=t.tier.approximate,
    )  # fmt: skip
