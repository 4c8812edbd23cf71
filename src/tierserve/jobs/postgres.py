"""The shared job store: PostgreSQL through psycopg 3 (the ``postgres`` extra).

Several servers may share one database: a lease takes rows with ``FOR UPDATE SKIP LOCKED``, so two
servers never take the same job, and neither waits on the other's locks. Every statement commits on
its own (autocommit) unless it needs a transaction; an accepted job is as durable as the server's
``synchronous_commit`` makes it (on by default: flushed to disk before ``202``). Jobs accepted
while a write is in flight share the next INSERT (group commit).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from tierserve.jobs.job import Job, JobSpec, JobSummary, Lease, Page
from tierserve.jobs.rows import SUMMARY_COLUMNS, WITH_BODY, WITH_RESULT, job_from_row
from tierserve.jobs.states import Decision, JobStatus
from tierserve.jobs.store import (
    SUMMARY_QUERY,
    UNFINISHED_QUERY,
    finish_params,
    lease_order,
    list_filter,
    summary_from_rows,
)
from tierserve.storage.group_commit import GroupCommit
from tierserve.storage.postgres import PostgresPool

_SCHEMA_LOCK = 0x7469657273657276  # pg_advisory_xact_lock key: servers starting together create it once

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    idempotency_key TEXT UNIQUE,
    fingerprint TEXT NOT NULL,
    model TEXT NOT NULL,
    version TEXT,
    tier TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    run_at DOUBLE PRECISION NOT NULL,
    started_at DOUBLE PRECISION,
    finished_at DOUBLE PRECISION,
    last_error TEXT,
    lease_owner TEXT,
    lease_token TEXT,
    expires_at DOUBLE PRECISION,
    body BYTEA NOT NULL,
    result BYTEA
);
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS tenant TEXT;
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS priority INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS time_limit_s DOUBLE PRECISION;
CREATE INDEX IF NOT EXISTS jobs_due ON jobs (status, run_at);
CREATE INDEX IF NOT EXISTS jobs_lease ON jobs (status, priority, seq);
CREATE INDEX IF NOT EXISTS jobs_expiry ON jobs (expires_at) WHERE expires_at IS NOT NULL;
"""

_INSERT_MANY = (
    "INSERT INTO jobs (id, idempotency_key, fingerprint, model, version, tier, status, max_attempts, "
    "created_at, updated_at, run_at, body, tenant, priority, time_limit_s) VALUES {values} "
    f"ON CONFLICT (idempotency_key) DO NOTHING RETURNING {SUMMARY_COLUMNS}"
)
_QUALIFIED_WITH_BODY = ", ".join(f"jobs.{column.strip()}" for column in WITH_BODY.split(","))
_LEASE = (
    "WITH picked AS (SELECT seq FROM jobs WHERE status = %s AND run_at <= %s ORDER BY priority, seq "
    "LIMIT %s FOR UPDATE SKIP LOCKED) "
    "UPDATE jobs SET status = 'running', attempts = attempts + 1, lease_owner = %s, lease_token = %s, "
    "run_at = %s, started_at = coalesce(started_at, %s), updated_at = %s "
    f"FROM picked WHERE jobs.seq = picked.seq RETURNING {_QUALIFIED_WITH_BODY}"
)
_FINISH = (
    "UPDATE jobs SET status = %s, run_at = %s, last_error = coalesce(%s, last_error), result = %s, "
    "finished_at = %s, expires_at = %s, updated_at = %s, lease_owner = NULL, lease_token = NULL "
    "WHERE id = %s AND lease_token = %s AND status = 'running'"
)
_PURGE_CHUNK = 1000


class PostgresJobStore:
    def __init__(self, conninfo: str, *, max_connections: int = 8) -> None:
        self.conninfo = conninfo
        self.max_connections = max_connections
        schema = [statement for statement in _SCHEMA.split(";") if statement.strip()]
        self._pool = PostgresPool(conninfo, "job database", schema, _SCHEMA_LOCK, share=max_connections)
        self._submits = GroupCommit(self._submit_batch)

    async def open(self) -> None:
        await self._pool.open()

    async def close(self) -> None:
        await self._pool.close()

    async def _one(self, query: str, params: Sequence[Any]) -> tuple[Any, ...] | None:
        async with self._pool.connection() as conn:
            cursor = await conn.execute(query, params)
            return await cursor.fetchone()

    async def submit(self, spec: JobSpec, now: float) -> tuple[Job, bool]:
        return await self._submits.submit((spec, now))

    async def _submit_batch(
        self, batch: Sequence[tuple[JobSpec, float]]
    ) -> list[tuple[Job, bool] | BaseException]:
        """One INSERT of many rows: one round trip and one commit (one WAL flush) for the batch."""
        row = "(%s, %s, %s, %s, %s, %s, 'queued', " + ", ".join(["%s"] * 8) + ")"
        values = ", ".join([row] * len(batch))
        params: list[Any] = []
        for spec, now in batch:
            params += [spec.id, spec.idempotency_key, spec.fingerprint, spec.model, spec.version]
            params += [spec.tier, spec.max_attempts, now, now, now, spec.body, spec.tenant]
            params += [spec.priority, spec.time_limit_s]
        async with self._pool.connection() as conn:
            cursor = await conn.execute(_INSERT_MANY.format(values=values), params)
            stored = {row[1]: job_from_row(row) for row in await cursor.fetchall()}
            replayed = [spec.idempotency_key for spec, _ in batch if spec.id not in stored]
            existing: dict[str, Job] = {}
            if replayed:
                cursor = await conn.execute(
                    f"SELECT {SUMMARY_COLUMNS} FROM jobs WHERE idempotency_key = ANY(%s)", (replayed,)
                )
                existing = {
                    job.idempotency_key or "": job for job in map(job_from_row, await cursor.fetchall())
                }
        results: list[tuple[Job, bool] | BaseException] = []
        for spec, _ in batch:
            if spec.id in stored:
                results.append((stored[spec.id], True))
            elif spec.idempotency_key in existing:
                results.append((existing[spec.idempotency_key], False))
            else:  # its key's job was purged between the two statements
                results.append(RuntimeError(f"job {spec.id} was neither stored nor found; submit it again"))
        return results

    async def get(self, job_id: str, *, with_result: bool = True) -> Job | None:
        columns = WITH_RESULT if with_result else SUMMARY_COLUMNS
        row = await self._one(f"SELECT {columns} FROM jobs WHERE id = %s", (job_id,))
        return None if row is None else job_from_row(row, result=with_result)

    async def list_jobs(
        self,
        *,
        status: JobStatus | None,
        model: str | None,
        limit: int,
        before: int | None,
        tenant: str | None = None,
    ) -> Page:
        where, params = list_filter("%s", status=status, model=model, tenant=tenant, before=before)
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                f"SELECT {SUMMARY_COLUMNS} FROM jobs {where} ORDER BY seq DESC LIMIT %s", (*params, limit + 1)
            )
            rows = await cursor.fetchall()
        jobs = [job_from_row(row) for row in rows[:limit]]
        return Page(jobs, jobs[-1].seq if len(rows) > limit else None)

    async def lease(self, owner: str, limit: int, now: float, visibility_s: float) -> list[Lease]:
        token = uuid.uuid4().hex
        leased: list[Lease] = []
        async with self._pool.connection() as conn, conn.transaction():
            # Expired leases first (those jobs waited longest), then queued jobs; by priority, then age.
            for status in (JobStatus.RUNNING, JobStatus.QUEUED):
                wanted = limit - len(leased)
                if wanted <= 0:
                    break
                cursor = await conn.execute(
                    _LEASE, (status.value, now, wanted, owner, token, now + visibility_s, now, now)
                )
                rows = await cursor.fetchall()
                leased.extend(lease_order(Lease(job_from_row(row, body=True), token) for row in rows))
        return leased

    async def heartbeat(self, leases: Sequence[Lease], until: float) -> set[str]:
        held = set()
        async with self._pool.connection() as conn, conn.transaction():
            for lease in leases:
                cursor = await conn.execute(
                    "UPDATE jobs SET run_at = %s WHERE id = %s AND lease_token = %s AND status = 'running'",
                    (until, lease.job.id, lease.token),
                )
                if cursor.rowcount:
                    held.add(lease.job.id)
        return held

    async def finish(
        self, lease: Lease, decision: Decision, now: float, ttl_s: float, result: bytes | None = None
    ) -> bool:
        async with self._pool.connection() as conn:
            cursor = await conn.execute(_FINISH, finish_params(lease, decision, now, ttl_s, result))
            return cursor.rowcount == 1

    async def release(self, leases: Sequence[Lease], now: float) -> None:
        async with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cursor:
            await cursor.executemany(
                "UPDATE jobs SET status = 'queued', attempts = attempts - 1, run_at = %s, updated_at = %s, "
                "lease_owner = NULL, lease_token = NULL "
                "WHERE id = %s AND lease_token = %s AND status = 'running'",
                [(now, now, lease.job.id, lease.token) for lease in leases],
            )

    async def cancel(self, job_id: str, now: float, ttl_s: float) -> tuple[Job | None, bool]:
        return await self._change(
            job_id,
            "status = 'cancelled', finished_at = %s, expires_at = %s, updated_at = %s WHERE id = %s "
            "AND status = 'queued'",
            (now, now + ttl_s, now, job_id),
        )

    async def requeue(self, job_id: str, now: float) -> tuple[Job | None, bool]:
        return await self._change(
            job_id,
            "status = 'queued', attempts = 0, run_at = %s, finished_at = NULL, expires_at = NULL, "
            "updated_at = %s WHERE id = %s AND status = 'dead'",
            (now, now, job_id),
        )

    async def _change(self, job_id: str, update: str, params: tuple[Any, ...]) -> tuple[Job | None, bool]:
        """A conditional update: the job as it is afterwards, and whether this changed it."""
        row = await self._one(f"UPDATE jobs SET {update} RETURNING {SUMMARY_COLUMNS}", params)
        if row is not None:
            return job_from_row(row), True
        return await self.get(job_id, with_result=False), False

    async def unfinished(self) -> dict[str | None, int]:
        async with self._pool.connection() as conn:
            cursor = await conn.execute(UNFINISHED_QUERY)
            return {tenant: int(n) for tenant, n in await cursor.fetchall()}

    async def summary(self) -> JobSummary:
        async with self._pool.connection() as conn:
            cursor = await conn.execute(SUMMARY_QUERY)
            return summary_from_rows(await cursor.fetchall())

    async def purge(self, now: float) -> int:
        total = 0
        async with self._pool.connection() as conn:
            while True:  # in chunks: each transaction stays short
                cursor = await conn.execute(
                    "DELETE FROM jobs WHERE seq IN "
                    "(SELECT seq FROM jobs WHERE expires_at <= %s LIMIT %s FOR UPDATE SKIP LOCKED)",
                    (now, _PURGE_CHUNK),
                )
                total += cursor.rowcount
                if cursor.rowcount < _PURGE_CHUNK:
                    return total
