"""Admission as one pure step: the ticket fixed at arrival, the queue entry, the pool choice."""

import math

import pytest

from tierserve.scheduler import admission
from tierserve.scheduler.admission import PoolPrice
from tierserve.scheduler.batching import BatchQueue
from tierserve.scheduler.service_time import ServiceTimeEstimator
from tierserve.scheduler.tiers import DEFAULT_TIERS, TierChoice

GOLD, SILVER, BRONZE = DEFAULT_TIERS


def queue() -> BatchQueue[str]:
    est = ServiceTimeEstimator(margin=0.0)
    for rows, ms in {1: 10, 4: 25, 16: 85}.items():
        est.observe(rows, ms / 1000)
    return BatchQueue(16, 0.0, 100, estimator=est)


def test_the_deadline_is_fixed_at_arrival_and_kept_by_every_later_attempt() -> None:
    t = admission.ticket(TierChoice(GOLD, 0.050), arrival=10.0, rows=2)
    assert t.deadline == pytest.approx(10.050) and t.margin_s == pytest.approx(0.005)
    item = admission.pending(t, "payload", "key")
    assert (item.arrival, item.deadline, item.priority, item.reject_late) == (10.0, t.deadline, 0, True)
    # A retry at 10.040 on the only pool left: 10 ms for a batch that takes 10 ms -> rejected, not
    # given a fresh 50 ms.
    option = admission.option("b", queue(), t, 10.040, [10.040], PoolPrice(), replicas=1)
    route = admission.route([option], t, 10.040, failed={"a"})
    assert route.pool is None and "retry budget spent" in route.reason


def test_fifo_tickets_queue_without_priority_or_deadline_and_are_never_rejected_for_lateness() -> None:
    t = admission.ticket(TierChoice(GOLD, 0.050), arrival=0.0, honour_tiers=False)
    item = admission.pending(t, "p", None)
    assert (item.priority, item.deadline, item.reject_late) == (0, math.inf, False)
    late = admission.option("cpu", queue(), t, 0.0, [5.0], PoolPrice(), replicas=1)
    assert admission.route([late], t, 0.0).pool == "cpu"


def test_the_cheapest_pool_predicted_in_time_wins_and_a_client_timeout_is_carried() -> None:
    t = admission.ticket(TierChoice(SILVER, 0.100, client_timeout=True), arrival=0.0)
    assert t.client_timeout
    cheap = admission.option("cpu", queue(), t, 0.0, [0.0], PoolPrice(cost_per_hour=0.1), replicas=1)
    rented = admission.option(
        "burst", queue(), t, 0.0, [0.0], PoolPrice(cost_per_1k_requests=1.0), replicas=1
    )
    assert cheap.cost_per_item < rented.cost_per_item
    assert admission.route([rented, cheap], t, 0.0).pool == "cpu"
    busy = admission.option("cpu", queue(), t, 0.0, [0.095], PoolPrice(cost_per_hour=0.1), replicas=1)
    assert admission.route([rented, busy], t, 0.0).pool == "burst"  # cpu would end past 90 ms


def test_a_tenant_over_budget_is_served_best_effort() -> None:
    t = admission.ticket(TierChoice(GOLD, 0.050), arrival=0.0, best_effort=True)
    assert not t.reject_late and not admission.pending(t, "p", None).reject_late
