"""The embedded job store: one SQLite file in WAL mode, nothing to install.

Durability: ``synchronous=NORMAL`` in WAL mode writes every commit into the log (the OS holds it)
before ``submit`` returns, and syncs the log to disk at checkpoints. An accepted job survives the
server process dying (SIGKILL, OOM, a crash); it may be lost only if the machine itself loses power
or its kernel crashes before the next checkpoint (at most about a second of jobs).

Statements run on the event loop's thread. Each takes tens of microseconds; handing them to a
thread costs more than that, and measured, the hand-offs (GIL waits) added milliseconds to the
p99 of accepting a job. What can take longer runs elsewhere: checkpoints (the fsync) and listings
run on a thread of their own with their own connection (WAL readers never block the writer), and
purges delete in small chunks. Jobs accepted in the same turn of the event loop share one
transaction (group commit). One server process per file: that is the supported set-up (its state
directory); another process writing the same file would make this one wait on SQLite's lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

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
from tierserve.storage.sqlite import connect, in_transaction

T = TypeVar("T")
log = logging.getLogger(__name__)

CHECKPOINT_INTERVAL_S = 1.0
BUSY_TIMEOUT_S = 5.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused, so page cursors stay valid after a purge
    id TEXT NOT NULL UNIQUE,
    idempotency_key TEXT,
    fingerprint TEXT NOT NULL,
    model TEXT NOT NULL,
    version TEXT,
    tier TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    run_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    last_error TEXT,
    lease_owner TEXT,
    lease_token TEXT,
    expires_at REAL,
    body BLOB NOT NULL,
    result BLOB,
    tenant TEXT,
    priority INTEGER NOT NULL DEFAULT 0,
    time_limit_s REAL
);
-- Partial: jobs without a key (most) cost no index write.
CREATE UNIQUE INDEX IF NOT EXISTS jobs_idempotency ON jobs (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_due ON jobs (status, run_at);
CREATE INDEX IF NOT EXISTS jobs_expiry ON jobs (expires_at) WHERE expires_at IS NOT NULL;
"""
# After the columns that stores made by earlier versions lack have been added (see ``open``).
_LEASE_INDEX = "CREATE INDEX IF NOT EXISTS jobs_lease ON jobs (status, priority, seq)"

_INSERT = (
    "INSERT INTO jobs (id, idempotency_key, fingerprint, model, version, tier, status, max_attempts, "
    "created_at, updated_at, run_at, body, tenant, priority, time_limit_s) "
    "VALUES (?, ?, ?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING "
    f"RETURNING {SUMMARY_COLUMNS}"
)
_ANY_DUE = "SELECT 1 FROM jobs WHERE status IN ('queued', 'running') AND run_at <= ? LIMIT 1"
# Expired leases first (those jobs waited longest), then queued jobs; each by tier priority, then age.
_LEASE = (
    "UPDATE jobs SET status = 'running', attempts = attempts + 1, lease_owner = ?, lease_token = ?, "
    "run_at = ?, started_at = coalesce(started_at, ?), updated_at = ? "
    "WHERE seq IN (SELECT seq FROM jobs WHERE status = ? AND run_at <= ? ORDER BY priority, seq LIMIT ?) "
    f"RETURNING {WITH_BODY}"
)
_FINISH = (
    "UPDATE jobs SET status = ?, run_at = ?, last_error = coalesce(?, last_error), result = ?, "
    "finished_at = ?, expires_at = ?, updated_at = ?, lease_owner = NULL, lease_token = NULL "
    "WHERE id = ? AND lease_token = ? AND status = 'running'"
)
_PURGE_CHUNK = 200  # rows per transaction: each one holds the event loop only briefly


class SqliteJobStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._side: ThreadPoolExecutor | None = None  # listings and checkpoints
        self._side_db: sqlite3.Connection | None = None
        self._checkpoints: asyncio.Task[None] | None = None
        self._submits = GroupCommit(self._submit_batch)

    # -- plumbing --------------------------------------------------------------------------------

    @property
    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("the job store is not open")
        return self._db

    async def open(self) -> None:
        # Missing, emptied, corrupt or another store's: fail with the reason, never start empty.
        self._db = connect(self.path, "job database", busy_timeout_s=BUSY_TIMEOUT_S, identity=True)
        self._db.execute("PRAGMA wal_autocheckpoint = 0")  # the side thread checkpoints instead
        self._db.executescript(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}
        added = {"tenant": "TEXT", "priority": "INTEGER NOT NULL DEFAULT 0", "time_limit_s": "REAL"}
        for column, kind in added.items():
            if column not in columns:  # a store made before jobs had owners, priorities or limits
                self._db.execute(f"ALTER TABLE jobs ADD COLUMN {column} {kind}")
        self._db.execute(_LEASE_INDEX)
        self._side = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jobs-sqlite")
        await self._on_side(self._open_side)
        self._checkpoints = asyncio.create_task(self._checkpoint_loop(), name="jobs-sqlite-checkpoint")

    def _open_side(self) -> None:
        self._side_db = connect(self.path, "job database", busy_timeout_s=BUSY_TIMEOUT_S)

    async def _on_side(self, fn: Callable[..., T], *args: Any) -> T:
        if self._side is None:
            raise RuntimeError("the job store is not open")
        return await asyncio.get_running_loop().run_in_executor(self._side, fn, *args)

    async def _checkpoint_loop(self) -> None:
        while True:
            await asyncio.sleep(CHECKPOINT_INTERVAL_S)
            try:
                await self._on_side(self._checkpoint)
            except sqlite3.Error:
                log.exception("checkpointing the job database failed")

    def _checkpoint(self) -> None:
        assert self._side_db is not None
        # PASSIVE: copies what it can without waiting for, or blocking, the writer.
        self._side_db.execute("PRAGMA wal_checkpoint(PASSIVE)")

    async def close(self) -> None:
        if self._checkpoints is not None:
            self._checkpoints.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._checkpoints
            self._checkpoints = None
        if self._side is not None:
            if self._side_db is not None:
                await self._on_side(self._checkpoint)
                await self._on_side(self._side_db.close)
                self._side_db = None
            self._side.shutdown(wait=True)
            self._side = None
        if self._db is not None:
            self._db.close()
            self._db = None

    def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in one write transaction (taken at once: no lock upgrade deadlocks)."""
        return in_transaction(self._conn, fn, immediate=True)

    # -- the store -------------------------------------------------------------------------------

    async def submit(self, spec: JobSpec, now: float) -> tuple[Job, bool]:
        return await self._submits.submit((spec, now))

    async def _submit_batch(
        self, batch: Sequence[tuple[JobSpec, float]]
    ) -> list[tuple[Job, bool] | BaseException]:
        """The jobs accepted in one turn of the event loop, in one transaction, on the loop's thread
        (no await: nothing else is accepted meanwhile); one bad statement fails its job only."""
        return self._write(lambda db: [_attempt(self._submit, spec, now) for spec, now in batch])

    def _submit(self, spec: JobSpec, now: float) -> tuple[Job, bool]:
        db = self._conn
        row = db.execute(
            _INSERT,
            (
                spec.id,
                spec.idempotency_key,
                spec.fingerprint,
                spec.model,
                spec.version,
                spec.tier,
                spec.max_attempts,
                now,
                now,
                now,
                spec.body,
                spec.tenant,
                spec.priority,
                spec.time_limit_s,
            ),
        ).fetchone()
        if row is not None:
            return job_from_row(row), True
        existing = db.execute(
            f"SELECT {SUMMARY_COLUMNS} FROM jobs WHERE idempotency_key = ?", (spec.idempotency_key,)
        ).fetchone()
        if existing is None:
            raise sqlite3.IntegrityError(f"job {spec.id} was neither stored nor found")
        return job_from_row(existing), False

    async def get(self, job_id: str, *, with_result: bool = True) -> Job | None:
        return self._get(job_id, with_result)

    def _get(self, job_id: str, with_result: bool) -> Job | None:
        columns = WITH_RESULT if with_result else SUMMARY_COLUMNS
        row = self._conn.execute(f"SELECT {columns} FROM jobs WHERE id = ?", (job_id,)).fetchone()
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
        return await self._on_side(self._list_jobs, status, model, limit, before, tenant)

    def _list_jobs(
        self, status: JobStatus | None, model: str | None, limit: int, before: int | None, tenant: str | None
    ) -> Page:
        assert self._side_db is not None
        where, params = list_filter("?", status=status, model=model, tenant=tenant, before=before)
        rows = self._side_db.execute(
            f"SELECT {SUMMARY_COLUMNS} FROM jobs {where} ORDER BY seq DESC LIMIT ?", (*params, limit + 1)
        ).fetchall()
        jobs = [job_from_row(row) for row in rows[:limit]]
        return Page(jobs, jobs[-1].seq if len(rows) > limit else None)

    async def summary(self) -> JobSummary:
        return await self._on_side(self._summary)

    async def unfinished(self) -> dict[str | None, int]:
        return await self._on_side(self._unfinished)

    def _unfinished(self) -> dict[str | None, int]:
        assert self._side_db is not None
        return {tenant: int(n) for tenant, n in self._side_db.execute(UNFINISHED_QUERY).fetchall()}

    def _summary(self) -> JobSummary:
        assert self._side_db is not None
        return summary_from_rows(self._side_db.execute(SUMMARY_QUERY).fetchall())

    async def lease(self, owner: str, limit: int, now: float, visibility_s: float) -> list[Lease]:
        if self._conn.execute(_ANY_DUE, (now,)).fetchone() is None:
            return []  # the common idle poll: no write transaction
        return self._write(lambda db: self._lease(db, owner, limit, now, visibility_s))

    def _lease(
        self, db: sqlite3.Connection, owner: str, limit: int, now: float, visibility_s: float
    ) -> list[Lease]:
        token = uuid.uuid4().hex
        leased: list[Lease] = []
        for status in (JobStatus.RUNNING, JobStatus.QUEUED):
            wanted = limit - len(leased)
            if wanted <= 0:
                break
            rows = db.execute(
                _LEASE, (owner, token, now + visibility_s, now, now, status.value, now, wanted)
            ).fetchall()
            leased.extend(lease_order(Lease(job_from_row(row, body=True), token) for row in rows))
        return leased

    async def heartbeat(self, leases: Sequence[Lease], until: float) -> set[str]:
        return self._write(lambda db: self._heartbeat(db, leases, until))

    def _heartbeat(self, db: sqlite3.Connection, leases: Sequence[Lease], until: float) -> set[str]:
        held = set()
        for lease in leases:
            cursor = db.execute(
                "UPDATE jobs SET run_at = ? WHERE id = ? AND lease_token = ? AND status = 'running'",
                (until, lease.job.id, lease.token),
            )
            if cursor.rowcount:
                held.add(lease.job.id)
        return held

    async def finish(
        self, lease: Lease, decision: Decision, now: float, ttl_s: float, result: bytes | None = None
    ) -> bool:
        cursor = self._conn.execute(_FINISH, finish_params(lease, decision, now, ttl_s, result))
        return cursor.rowcount == 1

    async def release(self, leases: Sequence[Lease], now: float) -> None:
        self._write(
            lambda db: db.executemany(
                "UPDATE jobs SET status = 'queued', attempts = attempts - 1, run_at = ?, updated_at = ?, "
                "lease_owner = NULL, lease_token = NULL "
                "WHERE id = ? AND lease_token = ? AND status = 'running'",
                [(now, now, lease.job.id, lease.token) for lease in leases],
            )
        )

    async def cancel(self, job_id: str, now: float, ttl_s: float) -> tuple[Job | None, bool]:
        return self._change(
            job_id,
            "status = 'cancelled', finished_at = ?, expires_at = ?, updated_at = ? WHERE id = ? "
            "AND status = 'queued'",
            (now, now + ttl_s, now, job_id),
        )

    async def requeue(self, job_id: str, now: float) -> tuple[Job | None, bool]:
        return self._change(
            job_id,
            "status = 'queued', attempts = 0, run_at = ?, finished_at = NULL, expires_at = NULL, "
            "updated_at = ? WHERE id = ? AND status = 'dead'",
            (now, now, job_id),
        )

    def _change(self, job_id: str, update: str, params: tuple[Any, ...]) -> tuple[Job | None, bool]:
        """A conditional update: the job as it is afterwards, and whether this changed it."""
        row = self._conn.execute(f"UPDATE jobs SET {update} RETURNING {SUMMARY_COLUMNS}", params).fetchone()
        if row is not None:
            return job_from_row(row), True
        return self._get(job_id, False), False

    async def purge(self, now: float) -> int:
        total = 0
        while True:
            deleted = self._conn.execute(
                "DELETE FROM jobs WHERE seq IN (SELECT seq FROM jobs WHERE expires_at <= ? LIMIT ?)",
                (now, _PURGE_CHUNK),
            ).rowcount
            total += deleted
            if deleted < _PURGE_CHUNK:
                return total
            await asyncio.sleep(0)  # let requests in between chunks


def _attempt(fn: Callable[..., T], *args: Any) -> T | BaseException:
    """``fn(*args)``, or the error it raised: one bad statement fails its job, not the batch."""
    try:
        return fn(*args)
    except sqlite3.Error as exc:
        return exc
