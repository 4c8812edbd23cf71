"""The job state machine and retry policy, without a database or a clock."""

from __future__ import annotations

import itertools

import pytest

from tierserve.jobs.states import (
    FINAL,
    TRANSITIONS,
    Decision,
    Failure,
    JobStatus,
    RetryPolicy,
    after_failure,
    can_transition,
    on_lease,
)

NOW = 1_000_000.0
POLICY = RetryPolicy(base_s=1.0, max_s=60.0)


def fixed(value: float) -> object:
    return lambda: value


def test_every_status_has_its_transitions_and_final_ones_have_none() -> None:
    assert set(TRANSITIONS) == set(JobStatus)
    for status in FINAL - {JobStatus.DEAD}:
        assert TRANSITIONS[status] == frozenset()
    assert {s for s in JobStatus if s.final} == FINAL


@pytest.mark.parametrize(
    ("source", "target", "allowed"),
    [
        (JobStatus.QUEUED, JobStatus.RUNNING, True),
        (JobStatus.QUEUED, JobStatus.CANCELLED, True),
        (JobStatus.RUNNING, JobStatus.CANCELLED, False),  # only queued jobs can be cancelled
        (JobStatus.RUNNING, JobStatus.RUNNING, True),  # a lease expired and another worker took it
        (JobStatus.RUNNING, JobStatus.QUEUED, True),  # retry
        (JobStatus.DEAD, JobStatus.QUEUED, True),  # an admin re-queues a dead letter
        (JobStatus.SUCCEEDED, JobStatus.QUEUED, False),
        (JobStatus.FAILED, JobStatus.QUEUED, False),
        (JobStatus.CANCELLED, JobStatus.RUNNING, False),
    ],
)
def test_transitions(source: JobStatus, target: JobStatus, allowed: bool) -> None:
    assert can_transition(source, target) is allowed


def test_a_terminal_failure_fails_the_job_at_once() -> None:
    decision = after_failure(1, 5, Failure("bad input", retryable=False), POLICY, NOW, fixed(0.5))
    assert decision == Decision(JobStatus.FAILED, error="bad input")


def test_a_retryable_failure_queues_the_job_again_after_a_backoff() -> None:
    decision = after_failure(1, 3, Failure("overloaded", retryable=True), POLICY, NOW, fixed(1.0))
    assert decision.status is JobStatus.QUEUED
    assert decision.run_at == pytest.approx(NOW + 1.0)
    assert decision.error == "overloaded"
    assert can_transition(JobStatus.RUNNING, decision.status)


def test_the_last_attempt_makes_a_dead_letter_with_the_last_error() -> None:
    decision = after_failure(3, 3, Failure("overloaded", retryable=True), POLICY, NOW, fixed(0.0))
    assert decision.status is JobStatus.DEAD
    assert decision.run_at is None
    assert decision.error is not None and decision.error.startswith("overloaded")
    assert "3 attempt" in decision.error


def test_backoff_doubles_and_jitter_keeps_it_between_half_and_all_of_the_step() -> None:
    for retry in range(1, 8):
        step = min(POLICY.max_s, POLICY.base_s * 2 ** (retry - 1))
        assert POLICY.delay(retry, fixed(0.0)) == pytest.approx(step / 2)
        assert POLICY.delay(retry, fixed(0.999999)) == pytest.approx(step, rel=1e-5)


def test_backoff_is_capped() -> None:
    assert POLICY.delay(50, fixed(1.0)) == pytest.approx(POLICY.max_s)


def test_jitter_spreads_jobs_that_failed_together() -> None:
    values = itertools.cycle([0.0, 0.25, 0.5, 0.75])
    delays = {POLICY.delay(3, lambda: next(values)) for _ in range(4)}
    assert len(delays) == 4
    assert all(2.0 <= d <= 4.0 for d in delays)


def test_a_retry_after_hint_is_a_lower_bound() -> None:
    failure = Failure("tier rejected", retryable=True, retry_after_s=7.0)
    decision = after_failure(1, 3, failure, POLICY, NOW, fixed(0.0))
    assert decision.run_at == pytest.approx(NOW + 7.0)


def test_retries_count_from_one() -> None:
    with pytest.raises(ValueError, match="from 1"):
        POLICY.delay(0, fixed(0.0))


def test_a_lease_within_the_attempts_runs_the_job() -> None:
    assert on_lease(1, 3) is None
    assert on_lease(3, 3) is None


def test_a_lease_past_the_attempts_means_workers_died_with_it_and_makes_it_dead() -> None:
    decision = on_lease(4, 3)
    assert decision is not None
    assert decision.status is JobStatus.DEAD
    assert decision.error is not None and "lease expired" in decision.error
