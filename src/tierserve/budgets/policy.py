"""Budgets and free-tier quotas: pure policy, wall-clock time passed in.

A **budget** caps money per calendar window (UTC hour, day or month) for one tenant or one pool.
When a tenant's budget is spent, its work either moves to the cheapest pool that serves it
(``action: cheapest``) or is refused with 429 naming the budget (``action: reject``, the default).
A pool whose budget is spent takes no more work until its window ends.

A **quota** is a free tier: a number of requests or replica-seconds per window on one pool. While
it lasts, the pool's work costs nothing, so the router prefers it; once it is used up, the pool is
closed until the window ends (``then: closed``, the default: a free tier you may not pay for) or
billed at its normal price (``then: paid``).

The book keeps usage per (name, window start). Several servers share usage through a store: each
adds its own increments there (``take_deltas``) and reads the totals back (``merge_totals``); the
usage a server acts on is the stored total plus what it has not written yet.

Example::

    book = BudgetBook.from_config({"budgets": [{"name": "acme-day", "tenant": "acme",
                                                "dollars": 5, "window": "day"}]})
    book.tenant_verdict("acme", now)         # Verdict(action="ok", ...)
    book.record("acme", "cpu", dollars=0.01, requests=1, replica_seconds=0.004, now=now)
"""

from __future__ import annotations

import calendar
import enum
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any


class Window(enum.StrEnum):
    HOUR = "hour"
    DAY = "day"
    MONTH = "month"


def window_bounds(window: Window, now: float) -> tuple[float, float]:
    """Start and end (epoch seconds, UTC) of the calendar window holding ``now``."""
    t = datetime.fromtimestamp(now, UTC)
    if window is Window.HOUR:
        start = t.replace(minute=0, second=0, microsecond=0)
        return start.timestamp(), start.timestamp() + 3600
    if window is Window.DAY:
        start = t.replace(hour=0, minute=0, second=0, microsecond=0)
        return start.timestamp(), start.timestamp() + 86400
    start = t.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    days = calendar.monthrange(t.year, t.month)[1]
    return start.timestamp(), start.timestamp() + days * 86400


class BudgetConfigError(ValueError):
    """The ``budgets``/``quotas`` section of the server config is wrong; the message says where."""


@dataclass(frozen=True)
class Budget:
    name: str
    dollars: float
    window: Window
    tenant: str | None = None  # exactly one of tenant and pool
    pool: str | None = None
    action: str = "reject"  # tenants only: reject (429) or cheapest (move to the cheapest pool)

    @property
    def scope(self) -> str:
        return f"tenant:{self.tenant}" if self.tenant is not None else f"pool:{self.pool}"


@dataclass(frozen=True)
class Quota:
    name: str
    pool: str
    window: Window
    requests: int | None = None  # one of requests and replica_seconds
    replica_seconds: float | None = None
    then: str = "closed"  # closed: no more work on the pool; paid: billed at its price


@dataclass
class Usage:
    dollars: float = 0.0
    requests: int = 0
    replica_seconds: float = 0.0

    def add(self, other: Usage) -> None:
        self.dollars += other.dollars
        self.requests += other.requests
        self.replica_seconds += other.replica_seconds


@dataclass(frozen=True)
class Verdict:
    """What a tenant's budgets say about its next request."""

    action: str  # ok | cheapest | reject
    budget: str | None = None
    message: str = ""
    retry_after_s: float = 0.0


@dataclass(frozen=True)
class PoolState:
    """What budgets and quotas say about a pool now: closed to new work, or free of charge."""

    open: bool = True
    free: bool = False
    reason: str = ""


@dataclass(frozen=True)
class UsageRow:
    """One budget or quota as the API and metrics show it."""

    name: str
    kind: str  # budget | quota
    scope: str
    window: str
    window_start: float
    resets_at: float
    limit: float
    used: float
    unit: str  # dollars | requests | replica_seconds
    requests: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "scope": self.scope,
            "window": self.window,
            "window_start": _iso(self.window_start),
            "resets_at": _iso(self.resets_at),
            "limit": self.limit,
            "used": round(self.used, 9),
            "remaining": round(max(0.0, self.limit - self.used), 9),
            "unit": self.unit,
            "requests": self.requests,
        }


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


@dataclass
class BudgetBook:
    budgets: Sequence[Budget] = ()
    quotas: Sequence[Quota] = ()
    _stored: dict[tuple[str, float], Usage] = field(default_factory=dict)  # totals read from the store
    _pending: dict[tuple[str, float], Usage] = field(default_factory=dict)  # not yet written

    @classmethod
    def from_config(cls, doc: Mapping[str, Any]) -> BudgetBook:
        budgets = [_budget(i, b) for i, b in enumerate(_list(doc.get("budgets"), "budgets"))]
        quotas = [_quota(i, q) for i, q in enumerate(_list(doc.get("quotas"), "quotas"))]
        names = [b.name for b in budgets] + [q.name for q in quotas]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise BudgetConfigError(f"budget and quota names must be unique: {duplicated} repeat")
        return cls(budgets, quotas)

    @property
    def empty(self) -> bool:
        return not self.budgets and not self.quotas

    # -- what the router asks ------------------------------------------------------------------

    def tenant_verdict(self, tenant: str | None, now: float) -> Verdict:
        """Whether ``tenant`` may spend now; the first spent budget decides (reject before cheapest)."""
        mine = [b for b in self.budgets if b.tenant is not None and b.tenant == tenant]
        spent = [b for b in mine if self._spent(b, now)]
        if not spent:
            return Verdict("ok")
        spent.sort(key=lambda b: b.action != "reject")
        budget = spent[0]
        start, end = window_bounds(budget.window, now)
        used = self.usage(budget.name, start).dollars
        message = (
            f"budget '{budget.name}' of tenant '{tenant}' is spent: ${used:.4f} of ${budget.dollars:.4f} "
            f"per {budget.window.value}; it resets at {_iso(end)}"
        )
        return Verdict(budget.action, budget.name, message, max(1.0, end - now))

    def pool_state(self, pool: str, now: float) -> PoolState:
        for budget in self.budgets:
            if budget.pool == pool and self._spent(budget, now):
                return PoolState(open=False, reason=f"pool budget '{budget.name}' is spent")
        free = False
        for quota in self.quotas:
            if quota.pool != pool:
                continue
            if self._quota_left(quota, now) > 0:
                free = True
            elif quota.then == "closed":
                return PoolState(open=False, reason=f"free-tier quota '{quota.name}' is used up")
        return PoolState(open=True, free=free)

    def record(
        self,
        tenant: str | None,
        pool: str,
        *,
        dollars: float,
        requests: int,
        replica_seconds: float,
        now: float,
    ) -> None:
        """Count one served request (``requests`` items) against every budget and quota it touches.
        Work on a pool with free quota left costs its budgets nothing."""
        free = any(q.pool == pool and self._quota_left(q, now) > 0 for q in self.quotas)
        spend = 0.0 if free else dollars
        for budget in self.budgets:
            if (budget.tenant is not None and budget.tenant == tenant) or budget.pool == pool:
                self._add(budget.name, budget.window, now, Usage(spend, requests, replica_seconds))
        for quota in self.quotas:
            if quota.pool == pool:
                self._add(quota.name, quota.window, now, Usage(0.0, requests, replica_seconds))

    # -- usage ---------------------------------------------------------------------------------

    def usage(self, name: str, window_start: float) -> Usage:
        total = Usage()
        for source in (self._stored, self._pending):
            found = source.get((name, window_start))
            if found is not None:
                total.add(found)
        return total

    def rows(self, now: float) -> list[UsageRow]:
        rows = []
        for budget in self.budgets:
            start, end = window_bounds(budget.window, now)
            used = self.usage(budget.name, start)
            rows.append(
                UsageRow(budget.name, "budget", budget.scope, budget.window.value, start, end,
                         budget.dollars, used.dollars, "dollars", used.requests)
            )  # fmt: skip
        for quota in self.quotas:
            start, end = window_bounds(quota.window, now)
            used = self.usage(quota.name, start)
            unit, limit, amount = _quota_measure(quota, used)
            rows.append(
                UsageRow(quota.name, "quota", f"pool:{quota.pool}", quota.window.value, start, end,
                         limit, amount, unit, used.requests)
            )  # fmt: skip
        return rows

    def take_deltas(self) -> list[tuple[str, float, Usage]]:
        """What this server counted since the last call (to add to the shared store)."""
        deltas = [(name, start, usage) for (name, start), usage in self._pending.items()]
        for name, start, usage in deltas:
            stored = self._stored.setdefault((name, start), Usage())
            stored.add(usage)  # counted as stored until merge_totals brings the real totals
        self._pending.clear()
        return deltas

    def merge_totals(self, totals: Iterable[tuple[str, float, Usage]], now: float) -> None:
        """Replace what is known to be stored with the store's totals (every server's usage);
        windows that have ended are forgotten."""
        self._stored = {(name, start): replace(usage) for name, start, usage in totals}
        current = set(self.current_windows(now))
        for source in (self._stored, self._pending):
            for key in [k for k in source if k not in current]:
                del source[key]

    def current_windows(self, now: float) -> list[tuple[str, float]]:
        items: list[Budget | Quota] = [*self.budgets, *self.quotas]
        return sorted(self._key(item, now) for item in items)

    # -- internals -----------------------------------------------------------------------------

    @staticmethod
    def _key(item: Budget | Quota, now: float) -> tuple[str, float]:
        return item.name, window_bounds(item.window, now)[0]

    def _add(self, name: str, window: Window, now: float, usage: Usage) -> None:
        key = (name, window_bounds(window, now)[0])
        self._pending.setdefault(key, Usage()).add(usage)

    def _spent(self, budget: Budget, now: float) -> bool:
        return self.usage(*self._key(budget, now)).dollars >= budget.dollars

    def _quota_left(self, quota: Quota, now: float) -> float:
        _, limit, used = _quota_measure(quota, self.usage(*self._key(quota, now)))
        return limit - used


def _quota_measure(quota: Quota, used: Usage) -> tuple[str, float, float]:
    if quota.requests is not None:
        return "requests", float(quota.requests), float(used.requests)
    return "replica_seconds", float(quota.replica_seconds or 0.0), used.replica_seconds


def _list(value: Any, what: str) -> list[Mapping[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
        raise BudgetConfigError(f"'{what}' must be a list of mappings")
    return value


def _window(where: str, raw: Any) -> Window:
    try:
        return Window(raw)
    except ValueError:
        raise BudgetConfigError(f"{where}: window must be one of hour, day, month, not {raw!r}") from None


def _positive(where: str, field_name: str, raw: Any) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw) or raw <= 0:
        raise BudgetConfigError(f"{where}: {field_name} must be a positive number, not {raw!r}")
    return float(raw)


def _name(where: str, doc: Mapping[str, Any]) -> str:
    name = doc.get("name")
    if not isinstance(name, str) or not name or len(name) > 128:
        raise BudgetConfigError(f"{where}: name must be a non-empty string of at most 128 characters")
    return name


def _budget(i: int, doc: Mapping[str, Any]) -> Budget:
    where = f"budgets[{i}]"
    unknown = sorted(set(doc) - {"name", "dollars", "window", "tenant", "pool", "action"})
    if unknown:
        raise BudgetConfigError(f"{where}: unknown keys {unknown}")
    tenant, pool = doc.get("tenant"), doc.get("pool")
    if (tenant is None) == (pool is None) or not isinstance(tenant or pool, str):
        raise BudgetConfigError(f"{where}: give exactly one of tenant and pool (a string)")
    action = doc.get("action", "reject")
    if action not in ("reject", "cheapest") or (pool is not None and "action" in doc):
        raise BudgetConfigError(f"{where}: action is reject or cheapest, and only for tenant budgets")
    return Budget(
        _name(where, doc), _positive(where, "dollars", doc.get("dollars")),
        _window(where, doc.get("window", "day")), tenant, pool, action,
    )  # fmt: skip


def _quota(i: int, doc: Mapping[str, Any]) -> Quota:
    where = f"quotas[{i}]"
    unknown = sorted(set(doc) - {"name", "pool", "window", "requests", "replica_seconds", "then"})
    if unknown:
        raise BudgetConfigError(f"{where}: unknown keys {unknown}")
    if not isinstance(doc.get("pool"), str):
        raise BudgetConfigError(f"{where}: pool must be a pool's name")
    if ("requests" in doc) == ("replica_seconds" in doc):
        raise BudgetConfigError(f"{where}: give exactly one of requests and replica_seconds")
    requests = doc.get("requests")
    whole = isinstance(requests, int) and not isinstance(requests, bool)
    if requests is not None and (not whole or requests <= 0):
        raise BudgetConfigError(f"{where}: requests must be a positive integer")
    seconds = doc.get("replica_seconds")
    then = doc.get("then", "closed")
    if then not in ("closed", "paid"):
        raise BudgetConfigError(f"{where}: then is closed or paid, not {then!r}")
    return Quota(
        _name(where, doc), doc["pool"], _window(where, doc.get("window", "day")), requests,
        None if seconds is None else _positive(where, "replica_seconds", seconds), then,
    )  # fmt: skip
