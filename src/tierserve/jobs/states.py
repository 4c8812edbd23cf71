"""The job state machine and retry policy: pure functions of plain values, no I/O.

    queued ──lease──► running ──ok──────────────► succeeded
      ▲  │               │ ├──terminal error──────► failed
      │  │               │ ├──retryable, attempts left──► queued (run_at = now + backoff)
      │  │               │ └──retryable, none left──────► dead   (the dead-letter state)
      │  └──cancel──► cancelled
      │                  └──lease expired (worker lost)──► running again, or dead when no attempts left
      └──admin requeue── dead

Stores apply these decisions; they never make them. Times are wall-clock seconds since the epoch
(``time.time()``), not monotonic: leases and retry times must mean the same thing to another
process, to a restarted server, and to a second server sharing the database.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from tierserve.errors import Conflict, TierserveError


class JobStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    DEAD = "dead"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self in FINAL


FINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.DEAD, JobStatus.CANCELLED})

TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset({JobStatus.RUNNING, JobStatus.CANCELLED}),
    # running -> running: the lease expired and another worker took the job.
    JobStatus.RUNNING: frozenset(
        {JobStatus.RUNNING, JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.QUEUED, JobStatus.DEAD}
    ),
    JobStatus.DEAD: frozenset({JobStatus.QUEUED}),
    JobStatus.SUCCEEDED: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.CANCELLED: frozenset(),
}


def can_transition(source: JobStatus, target: JobStatus) -> bool:
    return target in TRANSITIONS[source]


def conflict(job_id: str, status: JobStatus, action: str, allowed: JobStatus) -> TierserveError:
    """The 409 for an action that the job's status does not allow."""
    return Conflict(f"job '{job_id}' is {status}; only {allowed} jobs can be {action}")


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter: before retry ``n`` (1-based) wait a uniformly random time
    between half and all of ``min(max_s, base_s * multiplier ** (n - 1))``.

    Half of the delay is fixed so that the backoff still grows when the random half is small; the
    other half spreads retries of jobs that failed together (an overload) so they do not return
    together. A hint from the failure (``Retry-After`` of an overloaded tier) is a lower bound.
    """

    base_s: float = 1.0
    max_s: float = 300.0
    multiplier: float = 2.0

    def delay(self, retry: int, random: Callable[[], float], *, at_least_s: float = 0.0) -> float:
        if retry < 1:
            raise ValueError("retries count from 1")
        ceiling = min(self.max_s, self.base_s * self.multiplier ** (retry - 1))
        return max(at_least_s, ceiling * (0.5 + 0.5 * random()))


@dataclass(frozen=True)
class Failure:
    """What went wrong with one attempt, as the worker saw it."""

    message: str
    retryable: bool
    retry_after_s: float = 0.0


@dataclass(frozen=True)
class Decision:
    """A job's next status after an attempt, and when it may run again (queued only)."""

    status: JobStatus
    run_at: float | None = None
    error: str | None = None


def after_failure(
    attempts: int,
    max_attempts: int,
    failure: Failure,
    policy: RetryPolicy,
    now: float,
    random: Callable[[], float],
) -> Decision:
    """The decision after attempt number ``attempts`` (1-based, counted at lease) failed."""
    if not failure.retryable:
        return Decision(JobStatus.FAILED, error=failure.message)
    if attempts >= max_attempts:
        return Decision(JobStatus.DEAD, error=f"{failure.message} (gave up after {attempts} attempt(s))")
    wait = policy.delay(attempts, random, at_least_s=failure.retry_after_s)
    return Decision(JobStatus.QUEUED, run_at=now + wait, error=failure.message)


def on_lease(attempts: int, max_attempts: int) -> Decision | None:
    """A job was just leased as attempt ``attempts``: None to run it, or a decision not to.

    A lease only exceeds ``max_attempts`` when earlier leases expired: workers died with the job
    in hand (a crash, or a job that kills its server). Such a job is a dead letter, not retried.
    """
    if attempts <= max_attempts:
        return None
    return Decision(
        JobStatus.DEAD,
        error=f"the worker running it was lost {max_attempts} time(s) (lease expired)",
    )
