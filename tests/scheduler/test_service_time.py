import pytest

from tierserve.scheduler.service_time import ServiceTimeEstimator


def test_unknown_estimator_predicts_nothing() -> None:
    est = ServiceTimeEstimator()
    assert not est.known and est.predict(4) == 0.0


def test_interpolates_between_observed_sizes_and_extrapolates_per_row() -> None:
    est = ServiceTimeEstimator(margin=0.0)
    est.observe(1, 0.010)
    est.observe(4, 0.025)
    assert est.predict(2) == pytest.approx(0.015)
    assert est.predict(8) == pytest.approx(0.050)
    assert est.predict(1) == pytest.approx(0.010)


def test_moves_towards_new_observations_and_tracks_spread() -> None:
    est = ServiceTimeEstimator(alpha=0.5, beta=0.5, margin=2.0)
    est.observe(1, 0.010)  # mean 10 ms, deviation seeded at a quarter
    est.observe(1, 0.020)
    mean, dev = est.snapshot()[1]
    assert mean == pytest.approx(0.015)
    assert dev == pytest.approx(0.5 * 0.0025 + 0.5 * 0.010)
    assert est.predict(1) == pytest.approx(mean + 2 * dev)


def test_max_rows_within_a_time_budget() -> None:
    est = ServiceTimeEstimator(margin=0.0)
    est.observe(1, 0.010)
    est.observe(8, 0.045)
    assert est.max_rows_within(0.025, limit=32) == 4
    assert est.max_rows_within(0.001, limit=32) == 1
    assert est.max_rows_within(1.0, limit=8) == 8


def test_a_new_size_between_known_ones_starts_with_their_spread_not_a_pessimistic_guess() -> None:
    est = ServiceTimeEstimator(margin=2.0)
    est.seed(8, 0.032, 0.001)
    est.seed(16, 0.062, 0.003)
    est.observe(12, 0.047)
    assert est.predict(12) == pytest.approx(0.047 + 2 * 0.002)


def test_one_stall_moves_the_estimate_a_bounded_step_but_a_real_change_is_followed() -> None:
    est = ServiceTimeEstimator(margin=2.0)
    for _ in range(20):
        est.observe(1, 0.010)
        est.observe(1, 0.012)
    steady = est.predict(1)
    est.observe(1, 0.100)  # one 100 ms stall of a 11 ms batch
    assert est.predict(1) < steady * 1.5
    est.observe(1, 0.011)
    est.observe(1, 0.300)  # a second slow batch in a row is a change, taken whole
    est.observe(1, 0.300)
    assert est.predict(1) > 0.100
    for _ in range(12):  # every batch now takes 30 ms: the estimate follows
        est.observe(1, 0.030)
    assert est.mean(1) == pytest.approx(0.030, rel=0.2)


def test_efficient_rows_is_the_smallest_size_within_three_percent_of_the_best_rate() -> None:
    est = ServiceTimeEstimator()
    for rows, ms in {1: 8.6, 4: 25.2, 8: 44.1, 16: 83.6, 32: 190.7}.items():
        est.seed(rows, ms / 1000, 0.001)
    assert est.efficient_rows(32) == 16  # 191 rows/s; 8 rows: 181 (95%)
    assert est.efficient_rows(8) == 8
    assert est.efficient_rows(32, share=0.9) == 8
