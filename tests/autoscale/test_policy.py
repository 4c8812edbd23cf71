"""Autoscaler decisions under step loads, with a virtual clock."""

import itertools

from tierserve.autoscale.policy import Autoscaler, PoolObservation, ScalingLimits

LIMITS = ScalingLimits(min_replicas=1, max_replicas=10, cooldown_s=30, down_after_s=120)


def obs(ready: int, util: float, p95: float = 0.0, queue: float = 0.0, starting: int = 0) -> PoolObservation:
    return PoolObservation(
        "cpu", ready=ready, starting=starting, utilisation=util, p95_ratio=p95, queue_ratio=queue
    )


def test_slo_pressure_scales_up_at_once_by_half_again() -> None:
    scaler = Autoscaler({"cpu": LIMITS})
    rec = scaler.recommend(obs(4, util=0.6, p95=1.2), now=0)
    assert rec.desired == 6 and "SLO pressure" in rec.reasons[0]
    # Pressure does not wait for the cooldown.
    assert scaler.recommend(obs(6, util=0.6, queue=0.9), now=1).desired == 9


def test_high_utilisation_scales_to_reach_the_target_utilisation() -> None:
    rec = Autoscaler({"cpu": LIMITS}).recommend(obs(4, util=1.0), now=0)
    assert rec.desired == 6  # ceil(4 * 1.0 / 0.7)


def test_step_load_up_then_back_down_with_hysteresis_and_cooldowns() -> None:
    scaler = Autoscaler({"cpu": LIMITS})
    replicas, history = 2, []
    for t in range(0, 600, 10):
        load = 3.0 if 60 <= t < 300 else 0.5  # replica-equivalents of work
        util = min(1.0, load / replicas)
        rec = scaler.recommend(obs(replicas, util=util, p95=1.5 if util >= 1.0 else 0.3), now=t)
        replicas = rec.desired
        history.append(replicas)
    assert max(history) >= 5  # grew for the step
    assert history[-1] < max(history)  # shrank after it, one step per cooldown
    downs = [i for i, (a, b) in enumerate(itertools.pairwise(history)) if b < a]
    assert all(history[i] - history[i + 1] == 1 for i in downs)  # one replica at a time
    assert all(later - earlier >= 3 for earlier, later in itertools.pairwise(downs))  # a 30 s cooldown apart
    assert min(downs) + 1 >= 30  # decided at t >= 300 s: never while the step's load was on


def test_replicas_still_starting_count_as_capacity() -> None:
    scaler = Autoscaler({"gpu": ScalingLimits(provisioning_delay_s=300)})
    rec = scaler.recommend(PoolObservation("gpu", ready=1, starting=2, utilisation=0.9), now=0)
    assert rec.desired == 3 and "still starting" in " ".join(rec.reasons)


def test_limits_clamp_and_say_so() -> None:
    scaler = Autoscaler({"cpu": ScalingLimits(min_replicas=2, max_replicas=3)})
    rec = scaler.recommend(obs(3, util=1.0, p95=2.0), now=0)
    assert rec.desired == 3 and any("clamped" in r for r in rec.reasons)
    assert scaler.recommend(obs(0, util=0.0), now=500).desired == 2


def test_calm_pool_within_band_does_not_change() -> None:
    scaler = Autoscaler({"cpu": LIMITS})
    for t in range(0, 1000, 50):
        rec = scaler.recommend(obs(3, util=0.5), now=t)
        assert rec.desired == 3 and rec.reasons == ("within the hysteresis band: no change",)
