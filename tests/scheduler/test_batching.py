import math

import pytest

from tierserve.scheduler.batching import BatchQueue, Pending, QueueFull, Step


def item(name: str, rows: int = 1, key: object = "k", arrival: float = 0.0, **kw: object) -> Pending[str]:
    return Pending(payload=name, rows=rows, batch_key=key, arrival=arrival, **kw)  # type: ignore[arg-type]


def names(step: Step[str]) -> list[str]:
    assert step.batch is not None
    return [i.payload for i in step.batch.items]


def test_empty_queue_has_no_batch() -> None:
    step = BatchQueue[str](8, 0.0, 10).next_batch(now=0.0)
    assert step.batch is None and not step.dropped and step.wake_at is None


def test_lone_request_runs_at_once_even_with_a_queue_delay() -> None:
    q: BatchQueue[str] = BatchQueue(8, max_queue_delay_s=0.5, capacity=10)
    q.push(item("a"), now=0.0)
    assert names(q.next_batch(now=0.0)) == ["a"]


def test_waiting_requests_merge_up_to_max_batch_size_in_arrival_order() -> None:
    q: BatchQueue[str] = BatchQueue(3, 0.0, 10)
    for n in "abcde":
        q.push(item(n), now=0.0)
    assert names(q.next_batch(0.0)) == ["a", "b", "c"]
    assert names(q.next_batch(0.0)) == ["d", "e"]
    assert q.next_batch(0.0).batch is None


def test_rows_count_towards_the_batch_size() -> None:
    q: BatchQueue[str] = BatchQueue(4, 0.0, 10)
    q.push(item("a", rows=3), now=0.0)
    q.push(item("b", rows=2), now=0.0)
    q.push(item("c", rows=1), now=0.0)
    step = q.next_batch(0.0)
    assert names(step) == ["a", "c"]
    assert step.batch is not None and step.batch.rows == 4
    assert names(q.next_batch(0.0)) == ["b"]


def test_only_requests_with_the_same_key_share_a_batch() -> None:
    q: BatchQueue[str] = BatchQueue(8, 0.0, 10)
    q.push(item("a", key=(16,)), now=0.0)
    q.push(item("b", key=(32,)), now=0.0)
    q.push(item("c", key=(16,)), now=0.0)
    assert names(q.next_batch(0.0)) == ["a", "c"]
    assert names(q.next_batch(0.0)) == ["b"]


def test_partial_batch_waits_for_company_only_while_others_wait() -> None:
    q: BatchQueue[str] = BatchQueue(4, max_queue_delay_s=0.010, capacity=10)
    q.push(item("a", arrival=1.0), now=0.0)
    q.push(item("b", arrival=1.002), now=0.0)
    assert q.next_batch(now=1.003).wake_at == pytest.approx(1.010)
    assert len(q) == 2  # nothing was taken while holding
    q.push(item("c", arrival=1.004), now=0.0)
    q.push(item("d", arrival=1.005), now=0.0)
    assert names(q.next_batch(now=1.005)) == ["a", "b", "c", "d"]  # full: no more waiting


def test_held_batch_is_released_at_the_delay() -> None:
    q: BatchQueue[str] = BatchQueue(4, max_queue_delay_s=0.010, capacity=10)
    q.push(item("a", arrival=1.0), now=0.0)
    q.push(item("b", arrival=1.001), now=0.0)
    assert names(q.next_batch(now=1.010)) == ["a", "b"]


def test_queue_is_bounded() -> None:
    q: BatchQueue[str] = BatchQueue(4, 0.0, capacity=2)
    q.push(item("a"), now=0.0)
    q.push(item("b"), now=0.0)
    with pytest.raises(QueueFull):
        q.push(item("c"), now=0.0)
    q.next_batch(0.0)
    q.push(item("c"), now=0.0)  # room again once work leaves


def test_cancelled_requests_leave_the_queue_and_free_capacity() -> None:
    q: BatchQueue[str] = BatchQueue(4, 0.0, capacity=2)
    a, b = item("a"), item("b")
    q.push(a, now=0.0)
    q.push(b, now=0.0)
    assert q.cancel(a)
    assert not q.cancel(a)  # only once
    assert len(q) == 1
    q.push(item("c"), now=0.0)
    assert names(q.next_batch(0.0)) == ["b", "c"]
    assert not q.cancel(b)  # already taken into a batch


def test_non_batching_model_runs_one_request_at_a_time() -> None:
    q: BatchQueue[str] = BatchQueue(0, 0.0, 10)
    q.push(item("a"), now=0.0)
    q.push(item("b"), now=0.0)
    assert names(q.next_batch(0.0)) == ["a"]
    assert names(q.next_batch(0.0)) == ["b"]


def test_priority_then_deadline_then_arrival_order() -> None:
    q: BatchQueue[str] = BatchQueue(1, 0.0, 10)
    q.push(item("late-low", priority=2, deadline=1.0), now=0.0)
    q.push(item("no-deadline-high", priority=0), now=0.0)
    q.push(item("soon-high", priority=0, deadline=0.5), now=0.0)
    q.push(item("soon-high-2", priority=0, deadline=0.5), now=0.0)
    order = [names(q.next_batch(0.0))[0] for _ in range(4)]
    assert order == ["soon-high", "soon-high-2", "no-deadline-high", "late-low"]


def test_rows_over_max_batch_size_are_refused() -> None:
    q: BatchQueue[str] = BatchQueue(4, 0.0, 10)
    with pytest.raises(ValueError):
        q.push(item("big", rows=5), now=0.0)


def test_oldest_arrival() -> None:
    q: BatchQueue[str] = BatchQueue(4, 0.0, 10)
    assert q.oldest_arrival() is None
    q.push(item("a", arrival=3.0, priority=1), now=0.0)
    q.push(item("b", arrival=5.0, priority=0, deadline=math.inf), now=0.0)
    assert q.oldest_arrival() == 3.0
