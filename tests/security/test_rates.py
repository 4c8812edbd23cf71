"""Rates and limits as keys and tenants declare them, and the windows that enforce them."""

from __future__ import annotations

import pytest

from tierserve.errors import InvalidInput
from tierserve.security.rates import Limits, Rate, Window, parse_tenant_limits


@pytest.mark.parametrize(
    ("raw", "amount", "per_s"),
    [
        ("50/s", 50, 1),
        ("50", 50, 1),
        ("50 / second", 50, 1),
        ("600/min", 600, 60),
        ("600/m", 600, 60),
        ("1000/h", 1000, 3600),
        ("7/hours", 7, 3600),
    ],
)
def test_rates_parse(raw: str, amount: int, per_s: int) -> None:
    assert Rate.parse(raw) == Rate(amount, per_s)


@pytest.mark.parametrize("raw", ["", "0/s", "-1/s", "5/fortnight", "five/s", "5/s/s", "1.5/s", "2000000/s"])
def test_bad_rates_are_rejected(raw: str) -> None:
    with pytest.raises(InvalidInput, match="invalid rate"):
        Rate.parse(raw)


def test_without_a_burst_the_window_is_the_rates_own_unit() -> None:
    assert Limits.parse(rate="50/s").window == Window(50, 1)
    assert Limits.parse(rate="600/min").window == Window(600, 60)


def test_a_burst_stretches_the_window_so_that_the_long_run_rate_holds() -> None:
    # 50/s with bursts of 100: at most 100 in any 2 s, 50/s on average.
    assert Limits.parse(rate="50/s", burst=100).window == Window(100, 2)
    # 10/min with a burst of 5: at most 5 in any 30 s.
    assert Limits.parse(rate="10/min", burst=5).window == Window(5, 30)
    # Windows are whole seconds: 10/s with a burst of 15 keeps 15 per 2 s (7.5/s long run).
    assert Limits.parse(rate="10/s", burst=15).window == Window(15, 2)


def test_a_burst_smaller_than_one_second_of_rate_is_refused() -> None:
    with pytest.raises(InvalidInput, match="at least the rate per second"):
        Limits.parse(rate="50/s", burst=10)


def test_a_burst_needs_a_rate() -> None:
    with pytest.raises(InvalidInput, match="needs a 'rate'"):
        Limits.parse(burst=10)


@pytest.mark.parametrize("bad", [0, -1, True, "x", 1.5])
def test_counts_must_be_positive_integers(bad: object) -> None:
    with pytest.raises(InvalidInput, match="must be an integer"):
        Limits.parse(concurrency=bad)


def test_no_limits() -> None:
    limits = Limits.parse()
    assert limits.empty and limits.window is None
    assert limits.describe() == {"rate": None, "burst": None, "concurrency": None, "window": None}


def test_tenant_limits_from_the_server_config() -> None:
    tenants = parse_tenant_limits(
        {"acme": {"rate": "100/s", "burst": 200, "concurrency": 8}, "*": {"rate": "10/s"}}
    )
    assert tenants["acme"].window == Window(200, 2)
    assert tenants["acme"].concurrency == 8
    assert tenants["*"].window == Window(10, 1)
    assert parse_tenant_limits(None) == {}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (["acme"], "must map tenant names"),
        ({"acme": "10/s"}, "expected a mapping"),
        ({"acme": {"rate": "10/s", "bucket": 3}}, "unknown keys"),
    ],
)
def test_bad_tenant_limits_are_rejected(raw: object, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        parse_tenant_limits(raw)
