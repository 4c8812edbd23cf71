"""The job store interface, and the choice of store from the server's settings.

Every write that finishes an attempt is conditional on the lease token it was leased with, so a
worker whose lease expired (and whose job another worker now runs) changes nothing. Times are
wall-clock seconds (see ``tierserve.jobs.states``); the caller passes ``now``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

from tierserve.jobs.job import Job, JobSpec, JobSummary, Lease, Page
from tierserve.jobs.states import Decision, JobStatus
from tierserve.storage.database import parse_database


class JobStore(Protocol):
    """Durable jobs. ``run_at`` of a queued job is its earliest start; of a running one, its lease expiry."""

    async def open(self) -> None:
        """Connect and create the schema if it is missing."""

    async def close(self) -> None: ...

    async def submit(self, spec: JobSpec, now: float) -> tuple[Job, bool]:
        """Store a queued job, durably once this returns; with an idempotency key that is already
        stored, store nothing and return that job. The flag says whether a job was created."""

    async def get(self, job_id: str, *, with_result: bool = True) -> Job | None: ...

    async def list_jobs(
        self,
        *,
        status: JobStatus | None,
        model: str | None,
        limit: int,
        before: int | None,
        tenant: str | None = None,
    ) -> Page:
        """Newest first; ``before`` is the ``next_cursor`` of the previous page; only ``tenant``'s
        jobs when given."""

    async def lease(self, owner: str, limit: int, now: float, visibility_s: float) -> list[Lease]:
        """Take up to ``limit`` due jobs (queued and ready, or running with an expired lease) for
        ``visibility_s`` seconds, counting an attempt on each. Jobs come with their bodies."""

    async def heartbeat(self, leases: Sequence[Lease], until: float) -> set[str]:
        """Extend ``leases`` to ``until``; the ids of the jobs still held."""

    async def finish(
        self,
        lease: Lease,
        decision: Decision,
        now: float,
        ttl_s: float,
        result: bytes | None = None,
    ) -> bool:
        """Apply ``decision`` to a leased job; False (nothing written) when the lease was lost.
        A final status starts the ``ttl_s`` after which the job is purged."""

    async def release(self, leases: Sequence[Lease], now: float) -> None:
        """Give leased jobs back (a clean shutdown): queued at once, the attempt not counted."""

    async def cancel(self, job_id: str, now: float, ttl_s: float) -> tuple[Job | None, bool]:
        """Cancel a queued job. The job as it is afterwards (None if unknown), and whether this
        call cancelled it."""

    async def requeue(self, job_id: str, now: float) -> tuple[Job | None, bool]:
        """Queue a dead job again with a fresh count of attempts. The job as it is afterwards (None
        if unknown), and whether this call re-queued it."""

    async def purge(self, now: float) -> int:
        """Delete jobs whose time to live has run out; how many."""

    async def unfinished(self) -> dict[str | None, int]:
        """Queued and running jobs per tenant (None: jobs without one)."""

    async def summary(self) -> JobSummary:
        """How many jobs there are in each status, and when the oldest queued one was accepted."""


# Counts by status and the oldest queued job's acceptance time, for metrics (same SQL on both stores).
UNFINISHED_QUERY = "SELECT tenant, COUNT(*) FROM jobs WHERE status IN ('queued', 'running') GROUP BY tenant"
SUMMARY_QUERY = (
    "SELECT status, COUNT(*), MIN(CASE WHEN status = 'queued' THEN created_at END) FROM jobs GROUP BY status"
)


def summary_from_rows(rows: Sequence[tuple[Any, ...]]) -> JobSummary:
    counts = {str(status): int(n) for status, n, _ in rows}
    oldest = [float(o) for _, _, o in rows if o is not None]
    return JobSummary(counts, min(oldest) if oldest else None)


def finish_params(
    lease: Lease, decision: Decision, now: float, ttl_s: float, result: bytes | None
) -> tuple[object, ...]:
    """Parameters of both stores' finish UPDATE: status, run_at, error, result, finished_at,
    expires_at (final states are purged after the TTL), updated_at, then the lease's job and token."""
    final = decision.status.final
    run_at = decision.run_at if decision.run_at is not None else now
    finished = (now, now + ttl_s) if final else (None, None)
    return (decision.status.value, run_at, decision.error, result, *finished, now, lease.job.id, lease.token)


def lease_order(leases: Iterable[Lease]) -> list[Lease]:
    """Leased jobs as the workers should start them: by tier priority, then age (an UPDATE ...
    RETURNING gives its rows in no particular order)."""
    return sorted(leases, key=lambda lease: (lease.job.priority, lease.job.seq))


def list_filter(
    placeholder: str, *, status: JobStatus | None, model: str | None, tenant: str | None, before: int | None
) -> tuple[str, list[object]]:
    """The WHERE clause and its parameters of both stores' job listing (newest first, before a cursor)."""
    filters = (
        ("status", "=", None if status is None else status.value),
        ("model", "=", model),
        ("tenant", "=", tenant),
        ("seq", "<", before),
    )
    chosen = [(f"{column} {op} {placeholder}", value) for column, op, value in filters if value is not None]
    where = f"WHERE {' AND '.join(clause for clause, _ in chosen)}" if chosen else ""
    return where, [value for _, value in chosen]


def open_store(database: str, state_dir: Path) -> JobStore:
    """The store named by ``--database`` (see ``tierserve.storage``)."""
    where = parse_database(database, state_dir)
    if where.postgres_url is not None:
        from tierserve.jobs.postgres import PostgresJobStore

        return PostgresJobStore(where.postgres_url)
    return _sqlite(where.jobs_file)


def _sqlite(path: Path) -> JobStore:
    from tierserve.jobs.sqlite import SqliteJobStore

    return SqliteJobStore(path)
