"""Job records as stores hand them out, and the spec of a job to accept."""

from __future__ import annotations

from dataclasses import dataclass

from tierserve.jobs.states import JobStatus


@dataclass(frozen=True)
class JobSpec:
    """A validated job to store: ``body`` is the V2 inference request JSON exactly as submitted."""

    id: str
    model: str
    version: str | None
    tier: str
    max_attempts: int
    body: bytes
    idempotency_key: str | None = None
    fingerprint: str = ""  # of what the client asked for: a reused idempotency key must match it
    tenant: str | None = None  # the owner (None: submitted while authentication was off)
    priority: int = 0  # its tier's: due jobs are leased by priority, then age
    time_limit_s: float | None = None  # an attempt running longer fails as timed out (None: no limit)


@dataclass(frozen=True)
class Job:
    seq: int  # store order; the pagination cursor
    id: str
    model: str
    version: str | None
    tier: str
    status: JobStatus
    attempts: int
    max_attempts: int
    created_at: float
    updated_at: float
    run_at: float  # queued: not before this time
    started_at: float | None = None
    finished_at: float | None = None
    last_error: str | None = None
    idempotency_key: str | None = None
    fingerprint: str = ""
    lease_token: str | None = None
    lease_expires: float | None = None
    expires_at: float | None = None  # final jobs: purged after this time
    body: bytes | None = None  # only where asked for (the worker needs it; listings do not)
    result: bytes | None = None  # V2 response JSON, once succeeded; only where asked for
    tenant: str | None = None  # the owner; its idempotency keys are stored as "<tenant>/<key>"
    priority: int = 0  # its tier's priority when submitted (lower is leased first)
    time_limit_s: float | None = None  # per attempt; None: no limit

    @property
    def client_idempotency_key(self) -> str | None:
        """The Idempotency-Key as its client sent it."""
        key = self.idempotency_key
        if key is None or self.tenant is None:
            return key
        return key.removeprefix(f"{self.tenant}/")


@dataclass(frozen=True)
class Lease:
    """The right to finish one attempt: writes that carry a stale token change nothing."""

    job: Job
    token: str


@dataclass(frozen=True)
class Page:
    jobs: list[Job]
    next_cursor: int | None


@dataclass(frozen=True)
class JobSummary:
    """Jobs per status, and the acceptance time of the oldest queued job (None: none queued)."""

    counts: dict[str, int]
    oldest_queued_at: float | None
