"""The load forecast: sustained load by horizon, trend, diurnal history, tier mix."""

from __future__ import annotations

import math

import pytest

from tierserve.autoscale.forecast import LoadForecast


def test_a_burst_counts_only_for_horizons_it_has_lasted() -> None:
    f = LoadForecast(interval_s=30)
    for _ in range(20):
        f.observe({"gold": 600, "bronze": 2400})  # 100 req/s for 10 minutes
    f.observe({"gold": 1800, "bronze": 7200})  # a 30 s burst at 300 req/s
    assert f.sustained(300.0)["gold"] == pytest.approx(20.0)
    assert f.sustained(0.0)["gold"] == pytest.approx(60.0)
    assert f.mix()["gold"] == pytest.approx(0.2)


def test_a_steady_rise_is_carried_forward_by_the_horizon() -> None:
    f = LoadForecast(interval_s=30)
    for i in range(30):
        f.observe({"gold": (100 + i) * 30})  # +1 req/s every 30 s
    # The lowest of the last 300 s is 120 (the oldest of the window), rising 1/30 req/s per second:
    # 120 + 2 x 300/30 = 140, the rate expected 300 s from now.
    assert f.total(300.0) == pytest.approx(140.0, abs=0.5)


def test_yesterday_at_this_hour_lifts_the_forecast_when_history_holds_a_day() -> None:
    f = LoadForecast(interval_s=600, period_s=86_400, smooth_s=600)
    for i in range(144 + 6):  # a day and an hour of a sine: trough at t=0
        rate = 1000 * (1 + 0.5 * math.sin(2 * math.pi * i * 600 / 86_400 - math.pi / 2))
        f.observe({"gold": rate * 600})
    now = f.total(0.0)
    ahead = f.total(3 * 3600.0)
    # Yesterday the rate rose by a factor 1.6 or so between this hour and three hours later.
    assert ahead > now * 1.3


def test_nothing_observed_forecasts_nothing() -> None:
    assert LoadForecast(interval_s=10).sustained(300) == {}
