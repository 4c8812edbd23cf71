import math

from tierserve.rollout.stats import mann_whitney_greater, normal_sf, quantile, two_proportions_greater


def test_normal_sf_known_values() -> None:
    assert normal_sf(0.0) == 0.5
    assert math.isclose(normal_sf(1.959964), 0.025, rel_tol=1e-4)
    assert math.isclose(normal_sf(-1.644854), 0.95, rel_tol=1e-4)


def test_two_proportions_by_hand() -> None:
    # 6/300 vs 0/2700: pooled 0.002, se = sqrt(0.002 * 0.998 * (1/300 + 1/2700)) = 0.002719
    result = two_proportions_greater(6, 300, 0, 2700)
    assert math.isclose(result.statistic, 0.02 / 0.0027190, rel_tol=1e-3)
    # Fisher: all 6 errors among the candidate's 300 of 3000 requests
    assert math.isclose(result.p_value, math.prod((300 - i) / (3000 - i) for i in range(6)), rel_tol=1e-9)
    assert two_proportions_greater(0, 300, 6, 2700).p_value > 0.5  # better, not worse
    assert two_proportions_greater(0, 100, 0, 100).p_value == 1.0  # no events: no evidence
    assert two_proportions_greater(1, 0, 0, 10).p_value == 1.0


def test_fisher_tail_matches_a_direct_sum() -> None:
    # 5 of 204 vs 8 of 3756: P(X >= 5), X hypergeometric(3960 items, 13 events, 204 drawn)
    direct = sum(
        math.comb(13, k) * math.comb(3960 - 13, 204 - k) / math.comb(3960, 204) for k in range(5, 14)
    )
    assert math.isclose(two_proportions_greater(5, 204, 8, 3756).p_value, direct, rel_tol=1e-9)
    assert 1e-4 < direct < 1e-3  # where the normal approximation would claim 3e-8


def test_mann_whitney_by_hand() -> None:
    # a = [4, 5, 6], b = [1, 2, 3]: U_a = 9 (every a beats every b); mean 4.5, var 3*3*7/12 = 5.25
    result = mann_whitney_greater([4.0, 5.0, 6.0], [1.0, 2.0, 3.0])
    assert math.isclose(result.statistic, (9 - 4.5 - 0.5) / math.sqrt(5.25))
    assert mann_whitney_greater([1.0, 2.0, 3.0], [4.0, 5.0, 6.0]).p_value > 0.9


def test_mann_whitney_ties_are_mid_ranked() -> None:
    same = [1.0] * 10
    assert mann_whitney_greater(same, same).p_value == 1.0  # every value tied: no variance
    result = mann_whitney_greater([1.0, 2.0, 2.0], [2.0, 3.0])
    # ranks: 1.0 -> 1, 2.0 x3 -> 3, 3.0 -> 5; R_a = 1 + 3 + 3 = 7, U_a = 7 - 6 = 1
    tie = (27 - 3) / (5 * 4)
    expected = (1 - 3 - 0.5) / math.sqrt(3 * 2 / 12 * (6 - tie))
    assert math.isclose(result.statistic, expected)


def test_quantile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert quantile(values, 0.95) == 95.0
    assert quantile(values, 0.5) == 50.0
    assert math.isnan(quantile([], 0.5))
