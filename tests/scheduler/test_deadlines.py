"""Tier-aware batch formation with a virtual clock and a hand-seeded service-time estimate."""

import math

import pytest

from tierserve.scheduler.batching import BatchQueue, Pending, QueueFull, Step
from tierserve.scheduler.service_time import ServiceTimeEstimator

GOLD, SILVER, BRONZE = 0, 1, 2
MS = 0.001


def estimator(per_batch_ms: dict[int, float]) -> ServiceTimeEstimator:
    est = ServiceTimeEstimator(margin=0.0)
    for rows, ms in per_batch_ms.items():
        est.observe(rows, ms * MS)
    return est


# 10 ms for one row, +5 ms per extra row.
LINEAR = estimator({1: 10, 2: 15, 4: 25, 8: 45, 16: 85})


def queue(max_batch: int = 16, capacity: int = 100, **kw: float) -> BatchQueue[str]:
    return BatchQueue(max_batch, 0.0, capacity, estimator=LINEAR, **kw)


def req(name: str, tier: int, arrival: float = 0.0, budget_ms: float | None = None) -> Pending[str]:
    budget = {GOLD: 50.0, SILVER: 150.0, BRONZE: 1000.0}[tier] if budget_ms is None else budget_ms
    return Pending(
        payload=name,
        rows=1,
        batch_key="k",
        arrival=arrival,
        priority=tier,
        deadline=arrival + budget * MS,
        reject_late=tier != BRONZE,
    )


def names(step: Step[str]) -> list[str]:
    assert step.batch is not None
    return [i.payload for i in step.batch.items]


def test_gold_is_served_before_silver_and_bronze_queued_earlier() -> None:
    q = queue(max_batch=1)
    q.push(req("b", BRONZE), now=0.0)
    q.push(req("s", SILVER), now=0.0)
    q.push(req("g", GOLD), now=0.0)
    assert [names(q.next_batch(0.0))[0] for _ in range(3)] == ["g", "s", "b"]


def test_earliest_deadline_first_within_a_tier() -> None:
    q = queue(max_batch=1)
    q.push(req("relaxed", GOLD, budget_ms=80), now=0.0)
    q.push(req("urgent", GOLD, budget_ms=30), now=0.0)
    assert names(q.next_batch(0.0)) == ["urgent"]


def test_batch_grows_only_while_the_head_still_makes_its_deadline() -> None:
    q = queue(guard_fraction=10.0)  # guard out of the way: only the deadline limits
    q.push(req("g", GOLD, budget_ms=26), now=0.0)  # 4 rows take 25 ms, 5 rows 30 ms
    for i in range(10):
        q.push(req(f"b{i}", BRONZE), now=0.0)
    assert names(q.next_batch(0.0)) == ["g", "b0", "b1", "b2"]


def test_a_late_joiner_cannot_break_an_earlier_members_deadline() -> None:
    q = queue(guard_fraction=10.0)
    q.push(req("s", SILVER, budget_ms=150), now=0.0)
    q.push(req("s-tight", SILVER, budget_ms=160), now=0.0)
    q.push(req("g-tight", GOLD, budget_ms=16), now=0.0)
    # g-tight allows 2 rows (15 ms); s joins; s-tight would make 3 rows (20 ms) > 16 ms.
    assert names(q.next_batch(0.0)) == ["g-tight", "s"]


def test_guard_caps_batches_while_gold_is_active_and_lifts_after() -> None:
    q = queue(guard_fraction=0.5, activity_window_s=2.0)
    q.push(req("g", GOLD, arrival=0.0), now=0.0)  # gold budget 50 ms → batches of at most 25 ms
    assert names(q.next_batch(0.0)) == ["g"]
    for i in range(8):
        q.push(req(f"b{i}", BRONZE, arrival=0.1), now=0.1)
    assert q.batch_rows_cap(0.1) == 4
    assert names(q.next_batch(0.1)) == ["b0", "b1", "b2", "b3"]
    assert q.batch_rows_cap(3.0) == 16  # no gold for longer than the window
    assert names(q.next_batch(3.0)) == ["b4", "b5", "b6", "b7"]


def test_request_that_can_no_longer_make_its_deadline_is_dropped_not_run() -> None:
    q = queue()
    q.push(req("g", GOLD, arrival=0.0), now=0.0)
    q.push(req("b", BRONZE, arrival=0.0), now=0.0)
    step = q.next_batch(now=0.045)  # 45 ms + 10 ms service > 50 ms budget
    assert [i.payload for i in step.dropped] == ["g"]
    assert names(step) == ["b"]  # best effort is late but still served


def test_best_effort_work_is_never_dropped() -> None:
    q = queue()
    q.push(req("b", BRONZE, arrival=0.0), now=0.0)
    step = q.next_batch(now=60.0)
    assert not step.dropped and names(step) == ["b"]


def test_bronze_gets_a_batch_every_aging_interval_under_gold_overload() -> None:
    q = queue(max_batch=1, aging_s=1.0)
    q.push(req("b", BRONZE, arrival=0.0), now=0.0)
    served = []
    now = 0.0
    for i in range(300):  # gold keeps arriving faster than it is served, for 1.5 s
        now = i * 0.005
        q.push(req(f"g{i}", GOLD, arrival=now, budget_ms=10_000), now=now)
        served.extend(names(q.next_batch(now)))
        if "b" in served:
            break
    assert "b" in served
    assert 1.0 <= now < 1.1


def test_admission_predicts_the_wait_behind_running_and_queued_work() -> None:
    q = queue(max_batch=1)
    for i in range(3):
        q.push(req(f"s{i}", SILVER), now=0.0)
    g = req("g", GOLD)
    # Only the running batch (ends at 8 ms) is ahead of gold: 8 + 10 ms.
    assert q.predict_finish(g, now=0.0, replicas_free_at=[0.008]) == pytest.approx(0.018)
    s = req("s", SILVER)
    # Silver waits for the 3 queued silver rows too: 8 + 4 * 10 ms.
    assert q.predict_finish(s, now=0.0, replicas_free_at=[0.008]) == pytest.approx(0.048)
    # Two replicas, one idle: the queued work splits across them.
    assert q.predict_finish(s, now=0.0, replicas_free_at=[0.008, -math.inf]) == pytest.approx(0.028)


def test_full_queue_evicts_the_newest_lower_priority_request_for_gold() -> None:
    q = queue(capacity=2)
    q.push(req("b-old", BRONZE), now=0.0)
    q.push(req("b-new", BRONZE), now=0.0)
    evicted = q.push(req("g", GOLD), now=0.0)
    assert evicted is not None and evicted.payload == "b-new"
    with pytest.raises(QueueFull):
        q.push(req("b-more", BRONZE), now=0.0)
    assert names(q.next_batch(0.0)) == ["g", "b-old"]


def test_depth_by_priority_counts_live_requests() -> None:
    q = queue()
    a = req("g", GOLD)
    q.push(a, now=0.0)
    q.push(req("b", BRONZE), now=0.0)
    q.cancel(a)
    assert q.depth_by_priority() == {GOLD: 0, BRONZE: 1}
