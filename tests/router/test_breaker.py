from tierserve.router.breaker import BreakerState, CircuitBreaker


def test_opens_after_consecutive_failures_and_refuses_during_cooldown() -> None:
    b = CircuitBreaker(failure_threshold=3, cooldown_s=5.0)
    for t in range(2):
        b.record_failure(now=t)
    assert b.state is BreakerState.CLOSED and b.acquire(now=2)
    b.record_failure(now=2)
    assert b.state is BreakerState.OPEN
    assert not b.acquire(now=6.9)


def test_half_open_admits_one_probe_then_closes_on_success() -> None:
    b = CircuitBreaker(failure_threshold=1, cooldown_s=5.0)
    b.record_failure(now=0)
    assert b.acquire(now=5.0)  # the probe
    assert b.state is BreakerState.HALF_OPEN
    assert not b.acquire(now=5.1)  # only one probe at a time
    b.record_success(now=5.2)
    assert b.state is BreakerState.CLOSED and b.acquire(now=5.3)


def test_failed_probe_opens_again_for_a_new_cooldown() -> None:
    b = CircuitBreaker(failure_threshold=1, cooldown_s=5.0)
    b.record_failure(now=0)
    assert b.acquire(now=5)
    b.record_failure(now=5.5)
    assert b.state is BreakerState.OPEN
    assert not b.acquire(now=10.4)
    assert b.acquire(now=10.5)


def test_opens_on_error_rate_without_consecutive_failures() -> None:
    b = CircuitBreaker(failure_threshold=100, error_rate=0.5, window=10, min_samples=10)
    for i in range(10):
        (b.record_failure if i % 2 else b.record_success)(now=i)
    assert b.state is BreakerState.OPEN


def test_successes_reset_the_consecutive_count() -> None:
    b = CircuitBreaker(failure_threshold=3, min_samples=100)
    for _ in range(5):
        b.record_failure(now=0)
        b.record_failure(now=0)
        b.record_success(now=0)
    assert b.state is BreakerState.CLOSED
