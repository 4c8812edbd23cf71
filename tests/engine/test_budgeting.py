"""Budgets and quotas as the router and the fleet planner see a pool (wall clock passed in)."""

from __future__ import annotations

from datetime import UTC, datetime

from tierserve.autoscale.planner import PlanPool
from tierserve.budgets.policy import BudgetBook
from tierserve.engine.budgeting import Budgeting
from tierserve.router.policy import PoolOption

NOON = datetime(2026, 3, 1, 12, tzinfo=UTC).timestamp()


def budgeting(**doc: object) -> Budgeting:
    return Budgeting(BudgetBook.from_config(doc), clock=lambda: NOON)


def test_a_free_tier_pool_is_chosen_first_then_closed_for_router_and_planner() -> None:
    b = budgeting(quotas=[{"name": "free", "pool": "burst", "requests": 1}])
    options = [PoolOption("cpu", 0.01, 1e-6), PoolOption("burst", 0.01, 1e-4)]
    free = {o.pool: o for o in b.options(options, b.verdict("acme"))}
    assert free["burst"].cost_per_item == 0.0 and free["burst"].available
    plan = PlanPool("burst", 100.0, cost_per_1k_requests=0.1, max_replicas=8, per_request=True)
    assert b.plan_pool(plan).cost_per_1k_requests == 0.0
    b.record("acme", "burst", 0.0001, 1, 0.0)
    closed = {o.pool: o for o in b.options(options, b.verdict("acme"))}
    assert not closed["burst"].available and closed["cpu"].available
    assert b.plan_pool(plan).max_replicas == plan.min_replicas


def test_a_tenant_over_a_cheapest_budget_keeps_only_the_cheapest_open_pools() -> None:
    b = budgeting(budgets=[{"name": "soft", "tenant": "acme", "dollars": 0.001, "action": "cheapest"}])
    b.record("acme", "gpu", 0.002, 1, 0.0)
    verdict = b.verdict("acme")
    assert verdict.action == "cheapest"
    options = [PoolOption("gpu", 0.001, 1e-4), PoolOption("cpu", 0.02, 1e-6)]
    assert [o.pool for o in b.options(options, verdict) if o.available] == ["cpu"]
    assert all(o.available for o in b.options(options, b.verdict("beta")))  # others untouched
