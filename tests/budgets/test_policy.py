"""Budgets and free-tier quotas: pure policy with the clock passed in."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tierserve.budgets.policy import BudgetBook, BudgetConfigError, Usage, Window, window_bounds

NOON = datetime(2026, 2, 14, 12, 30, tzinfo=UTC).timestamp()


def book(**doc: object) -> BudgetBook:
    return BudgetBook.from_config(doc)


def test_windows_are_utc_calendar_windows() -> None:
    assert window_bounds(Window.HOUR, NOON) == (
        datetime(2026, 2, 14, 12, tzinfo=UTC).timestamp(),
        datetime(2026, 2, 14, 13, tzinfo=UTC).timestamp(),
    )
    start, end = window_bounds(Window.DAY, NOON)
    assert end - start == 86400 and start == datetime(2026, 2, 14, tzinfo=UTC).timestamp()
    start, end = window_bounds(Window.MONTH, NOON)
    assert (start, end) == (
        datetime(2026, 2, 1, tzinfo=UTC).timestamp(),
        datetime(2026, 3, 1, tzinfo=UTC).timestamp(),
    )


def test_a_spent_tenant_budget_rejects_with_its_name_until_the_window_ends() -> None:
    b = book(budgets=[{"name": "acme-day", "tenant": "acme", "dollars": 1.0, "window": "day"}])
    assert b.tenant_verdict("acme", NOON).action == "ok"
    b.record("acme", "cpu", dollars=0.6, requests=1, replica_seconds=0.0, now=NOON)
    assert b.tenant_verdict("acme", NOON).action == "ok"
    b.record("acme", "cpu", dollars=0.4, requests=1, replica_seconds=0.0, now=NOON)
    verdict = b.tenant_verdict("acme", NOON)
    assert verdict.action == "reject" and verdict.budget == "acme-day"
    assert "acme-day" in verdict.message and "$1.0000 of $1.0000 per day" in verdict.message
    assert verdict.retry_after_s == pytest.approx(11.5 * 3600)
    assert b.tenant_verdict("other", NOON).action == "ok"  # another tenant is not touched
    tomorrow = NOON + 86400
    b.merge_totals([], tomorrow)
    assert b.tenant_verdict("acme", tomorrow).action == "ok"


def test_cheapest_budgets_move_work_and_reject_wins_over_cheapest() -> None:
    b = book(
        budgets=[
            {"name": "soft", "tenant": "acme", "dollars": 1, "window": "hour", "action": "cheapest"},
            {"name": "hard", "tenant": "acme", "dollars": 3, "window": "day"},
        ]
    )
    b.record("acme", "gpu", dollars=1.5, requests=1, replica_seconds=0.0, now=NOON)
    assert b.tenant_verdict("acme", NOON).action == "cheapest"
    b.record("acme", "gpu", dollars=1.5, requests=1, replica_seconds=0.0, now=NOON)
    assert b.tenant_verdict("acme", NOON).budget == "hard"


def test_a_free_tier_pool_is_free_while_its_quota_lasts_then_closed() -> None:
    b = book(
        quotas=[{"name": "free-burst", "pool": "burst", "requests": 2, "window": "day"}],
        budgets=[{"name": "acme", "tenant": "acme", "dollars": 10}],
    )
    assert b.pool_state("burst", NOON).free
    b.record("acme", "burst", dollars=0.5, requests=2, replica_seconds=0.0, now=NOON)
    assert b.rows(NOON)[0].used == 0.0  # free-tier work costs the tenant's budget nothing
    state = b.pool_state("burst", NOON)
    assert not state.open and "free-burst" in state.reason
    assert b.pool_state("cpu", NOON) == b.pool_state("cpu", NOON + 1)  # untouched pools stay open


def test_a_paid_quota_reopens_the_pool_at_its_price_and_replica_seconds_count() -> None:
    b = book(quotas=[{"name": "q", "pool": "gpu", "replica_seconds": 1.0, "then": "paid"}])
    b.record(None, "gpu", dollars=0.1, requests=10, replica_seconds=1.5, now=NOON)
    state = b.pool_state("gpu", NOON)
    assert state.open and not state.free
    (row,) = b.rows(NOON)
    assert (row.unit, row.limit, row.used) == ("replica_seconds", 1.0, 1.5)


def test_a_spent_pool_budget_closes_the_pool() -> None:
    b = book(budgets=[{"name": "gpu-month", "pool": "gpu", "dollars": 2, "window": "month"}])
    b.record("anyone", "gpu", dollars=2, requests=1, replica_seconds=0.0, now=NOON)
    assert not b.pool_state("gpu", NOON).open


def test_usage_is_shared_through_deltas_and_totals() -> None:
    """Two servers: each writes its increments, reads the totals, and acts on the sum."""
    doc = {"budgets": [{"name": "acme", "tenant": "acme", "dollars": 1.0, "window": "day"}]}
    a, b = BudgetBook.from_config(doc), BudgetBook.from_config(doc)
    store: dict[tuple[str, float], Usage] = {}

    def sync(server: BudgetBook) -> None:
        for name, start, usage in server.take_deltas():
            store.setdefault((name, start), Usage()).add(usage)
        server.merge_totals([(n, s, u) for (n, s), u in store.items()], NOON)

    a.record("acme", "cpu", dollars=0.6, requests=1, replica_seconds=0.0, now=NOON)
    b.record("acme", "cpu", dollars=0.6, requests=1, replica_seconds=0.0, now=NOON)
    assert a.tenant_verdict("acme", NOON).action == "ok"
    sync(a)
    sync(b)
    assert b.tenant_verdict("acme", NOON).action == "reject"
    sync(a)
    assert a.tenant_verdict("acme", NOON).action == "reject"
    assert a.rows(NOON)[0].used == pytest.approx(1.2)


@pytest.mark.parametrize(
    "doc, message",
    [
        ({"budgets": [{"name": "x", "dollars": 1}]}, "exactly one of tenant and pool"),
        ({"budgets": [{"name": "x", "tenant": "a", "pool": "b", "dollars": 1}]}, "exactly one"),
        ({"budgets": [{"name": "x", "tenant": "a", "dollars": -1}]}, "positive"),
        ({"budgets": [{"name": "x", "tenant": "a", "dollars": float("nan")}]}, "positive"),
        ({"budgets": [{"name": "x", "tenant": "a", "dollars": 1, "window": "week"}]}, "hour, day, month"),
        ({"budgets": [{"name": "x", "pool": "a", "dollars": 1, "action": "cheapest"}]}, "only for tenant"),
        ({"budgets": [{"name": "x", "tenant": "a", "dollars": 1, "extra": 1}]}, "unknown keys"),
        ({"quotas": [{"name": "q", "pool": "p"}]}, "exactly one of requests"),
        ({"quotas": [{"name": "q", "pool": "p", "requests": True}]}, "positive integer"),
        ({"quotas": [{"name": "q", "pool": "p", "requests": 1, "then": "maybe"}]}, "closed or paid"),
        (
            {
                "budgets": [{"name": "x", "tenant": "a", "dollars": 1}],
                "quotas": [{"name": "x", "pool": "p", "requests": 1}],
            },
            "unique",
        ),
        ({"budgets": {"name": "x"}}, "list of mappings"),
    ],
)
def test_bad_config_names_what_is_wrong(doc: dict[str, object], message: str) -> None:
    with pytest.raises(BudgetConfigError, match=message):
        BudgetBook.from_config(doc)
