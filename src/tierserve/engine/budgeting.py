"""Budgets and free-tier quotas applied to one request's routing (policy in ``tierserve.budgets``).

Before routing, a tenant whose budget is spent is refused (429 naming the budget) or moved to the
cheapest pool that serves it, best effort. While routing, a pool whose budget or free quota is used
up is closed to new work, and a pool with free quota left costs nothing, so it is chosen first
whenever it meets the deadline. After serving, the request's cost counts against every budget and
quota it touched. The fleet planner sees the same: a free pool at no cost, a shut pool at its floor.
Budget windows are calendar windows, so this module reads the wall clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from tierserve.autoscale.planner import PlanPool
from tierserve.budgets.policy import BudgetBook, Verdict
from tierserve.errors import RateLimited
from tierserve.router.policy import PoolOption


class BudgetExhausted(RateLimited):
    """A tenant's budget is spent (429, Retry-After until its window resets)."""


@dataclass
class Budgeting:
    book: BudgetBook
    clock: Callable[[], float] = time.time

    @property
    def active(self) -> bool:
        return not self.book.empty

    def verdict(self, tenant: str | None) -> Verdict:
        """The tenant's standing; raises BudgetExhausted when its work is refused."""
        verdict = self.book.tenant_verdict(tenant, self.clock())
        if verdict.action == "reject":
            raise BudgetExhausted(verdict.message, retry_after_s=verdict.retry_after_s)
        return verdict

    def options(self, options: Sequence[PoolOption], verdict: Verdict) -> list[PoolOption]:
        """Pools as budgets and quotas see them: closed ones unavailable, free ones at no cost; for a
        tenant over a ``cheapest`` budget, only the cheapest pools that are open."""
        now = self.clock()
        adjusted = []
        for option in options:
            state = self.book.pool_state(option.pool, now)
            if not state.open:
                option = replace(option, available=False)
            elif state.free:
                option = replace(option, cost_per_item=0.0)
            adjusted.append(option)
        if verdict.action == "cheapest":
            open_ = [o for o in adjusted if o.available]
            if open_:
                cheapest = min(o.cost_per_item for o in open_)
                adjusted = [
                    o if o.cost_per_item <= cheapest else replace(o, available=False) for o in adjusted
                ]
        return adjusted

    def plan_pool(self, pool: PlanPool) -> PlanPool:
        """A pool as the fleet planner should price it now: free while its quota lasts (so the
        planner fills it first), kept at its floor once a budget or a closed quota shuts it."""
        if not self.active:
            return pool
        state = self.book.pool_state(pool.name, self.clock())
        if not state.open:
            return replace(pool, max_replicas=pool.min_replicas)
        if state.free:
            return replace(pool, cost_per_hour=0.0, cost_per_1k_requests=0.0)
        return pool

    def record(
        self, tenant: str | None, pool: str, dollars: float, rows: int, replica_seconds: float
    ) -> None:
        self.book.record(
            tenant, pool, dollars=dollars, requests=rows, replica_seconds=replica_seconds, now=self.clock()
        )
