"""Budget and quota usage kept where keys and the audit log are kept, so that it survives restarts
and several servers sharing PostgreSQL spend one budget together.

Every ``interval_s`` this server adds what it counted since the last write to the stored totals and
reads back every server's totals (``BudgetBook.take_deltas`` / ``merge_totals``). Between syncs a
server acts on the stored totals plus its own unwritten usage, so several servers together may
overspend a budget by at most what they serve in one interval.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable

from prometheus_client.core import GaugeMetricFamily, Metric

from tierserve.budgets.policy import BudgetBook, Usage
from tierserve.security.store import SecurityStore

log = logging.getLogger(__name__)


class UsageSync:
    def __init__(
        self,
        store: SecurityStore,
        book: BudgetBook,
        *,
        interval_s: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.book = book
        self.interval_s = interval_s
        self.clock = clock

    async def sync(self) -> None:
        """Write this server's usage, read everyone's."""
        if self.book.empty:
            return
        deltas = self.book.take_deltas()
        if deltas:
            await self.store.add_usage(
                [(n, s, u.dollars, u.requests, u.replica_seconds) for n, s, u in deltas]
            )
        now = self.clock()
        since = min(start for _, start in self.book.current_windows(now))
        rows = await self.store.usage(since)
        self.book.merge_totals([(n, s, Usage(d, r, rs)) for n, s, d, r, rs in rows], now)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.sync()
            except Exception:  # the store is down: keep counting in memory, write on the next sync
                log.exception("writing budget usage failed; it is kept and written on the next sync")

    def metric_families(self) -> Iterable[Metric]:
        if self.book.empty:
            return []
        spent = GaugeMetricFamily(
            "tierserve_budget_spent_dollars",
            "Money spent in the budget's current window (all servers sharing the store).",
            labels=["budget", "scope", "window"],
        )
        limit = GaugeMetricFamily(
            "tierserve_budget_limit_dollars", "The budget per window.", labels=["budget", "scope", "window"]
        )
        used = GaugeMetricFamily(
            "tierserve_quota_used",
            "Free-tier quota used in the current window, in its unit (requests or replica_seconds).",
            labels=["quota", "scope", "window", "unit"],
        )
        quota = GaugeMetricFamily(
            "tierserve_quota_limit",
            "Free-tier quota per window.",
            labels=["quota", "scope", "window", "unit"],
        )
        for row in self.book.rows(self.clock()):
            if row.kind == "budget":
                spent.add_metric([row.name, row.scope, row.window], row.used)
                limit.add_metric([row.name, row.scope, row.window], row.limit)
            else:
                used.add_metric([row.name, row.scope, row.window, row.unit], row.used)
                quota.add_metric([row.name, row.scope, row.window, row.unit], row.limit)
        return [spent, limit, used, quota]
