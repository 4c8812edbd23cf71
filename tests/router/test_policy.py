import math

from tierserve.router.policy import PoolOption, choose_pool, retry_order

CPU = PoolOption("cpu", predicted_finish=0.040, cost_per_item=2e-6, load=3)
INT8 = PoolOption("cpu-int8", predicted_finish=0.020, cost_per_item=1e-6, load=1, approximate=True)
BURST = PoolOption("burst", predicted_finish=0.012, cost_per_item=5e-5, load=0)


def route(options: list[PoolOption], deadline: float, **kw: object) -> str | None:
    kw.setdefault("reject_late", True)
    kw.setdefault("margin_s", 0.005)
    return choose_pool(options, now=0.0, deadline=deadline, **kw).pool  # type: ignore[arg-type]


def test_cheapest_feasible_pool_wins() -> None:
    assert route([CPU, INT8, BURST], deadline=0.100) == "cpu-int8"


def test_approximate_variants_only_for_tiers_that_accept_them() -> None:
    assert route([CPU, INT8, BURST], deadline=0.100, allow_approximate=False) == "cpu"


def test_deadline_filter_with_margin_sends_tight_work_to_the_expensive_fast_pool() -> None:
    assert route([CPU, INT8, BURST], deadline=0.030, allow_approximate=False) == "burst"
    # cpu finishes at 40 ms: with a 5 ms margin a 44 ms deadline is not enough, 45 ms is.
    assert route([CPU, BURST], deadline=0.044) == "burst"
    assert route([CPU, BURST], deadline=0.045) == "cpu"


def test_ties_in_cost_break_by_load_then_finish() -> None:
    a = PoolOption("a", predicted_finish=0.010, cost_per_item=1e-6, load=4)
    b = PoolOption("b", predicted_finish=0.030, cost_per_item=1e-6, load=1)
    assert route([a, b], deadline=1.0) == "b"


def test_none_fits_rejects_or_goes_best_effort_to_the_cheapest() -> None:
    rejected = choose_pool([CPU, BURST], now=0.0, deadline=0.005, margin_s=0.001, reject_late=True)
    assert rejected.pool is None and "predicted completion in 12 ms at best (pool 'burst')" in rejected.reason
    # Late anywhere: best effort does not pay the endpoint to be less late.
    assert route([CPU, BURST], deadline=0.005, reject_late=False) == "cpu"


def test_pools_with_open_breakers_are_skipped() -> None:
    down = PoolOption("cpu-int8", predicted_finish=0.020, cost_per_item=1e-6, available=False)
    assert route([CPU, down], deadline=0.100) == "cpu"
    only_down = choose_pool([down], now=0.0, deadline=1.0, margin_s=0.0, reject_late=False)
    assert only_down.pool is None and "breaker" in only_down.reason and math.isinf(only_down.predicted_finish)


def test_retry_goes_to_the_next_pool_while_the_deadline_allows() -> None:
    again = retry_order(
        [CPU, INT8, BURST], failed={"cpu-int8"}, now=0.0, deadline=0.100, margin_s=0.005, reject_late=True
    )
    assert again.pool == "cpu"
    spent = retry_order(
        [CPU, BURST], failed={"burst"}, now=0.0, deadline=0.030, margin_s=0.005, reject_late=True
    )
    assert spent.pool is None and "retry budget" in spent.reason


def test_best_effort_pays_no_premium_for_a_rented_endpoint() -> None:
    owned = PoolOption("cpu", predicted_finish=5.0, cost_per_item=1e-6)  # far past the deadline
    rented = PoolOption("burst", predicted_finish=0.012, cost_per_item=5e-5, rented=True)
    assert route([owned, rented], deadline=1.0, reject_late=False) == "cpu"
    assert route([owned, rented], deadline=1.0, reject_late=True) == "burst"  # a deadline: rent it
    assert route([rented], deadline=1.0, reject_late=False) == "burst"  # nothing owned: the endpoint
    cheap = PoolOption("remote", predicted_finish=0.012, cost_per_item=1e-7, rented=True)
    assert route([owned, cheap], deadline=1.0, reject_late=False) == "remote"  # cheaper: no premium
