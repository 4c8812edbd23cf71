"""Where keys and the audit log live: beside the jobs, in SQLite (default) or PostgreSQL.

SQLite keeps them in ``security.db`` next to the job database, not in the same file: SQLite has
one writer per file, and the job store writes on the event loop's thread, where waiting on a lock
held by an audit flush would stall every request. PostgreSQL keeps them in the same database as
the jobs (tables ``api_keys`` and ``audit_log``). The audit log is append-only in both: triggers
refuse UPDATE and DELETE, except the retention purge's deletion of records older than its cut-off
(``TIERSERVE_AUDIT_RETENTION_DAYS``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from tierserve.security.audit_records import AuditQuery, AuditRecord
from tierserve.security.keys import KeyRecord
from tierserve.security.rates import Limits
from tierserve.security.roles import Role
from tierserve.storage.database import parse_database

SQLITE_FILE = "security.db"

# Budget and quota usage per (name, window start): every server adds its increments.
USAGE_SCHEMA = """CREATE TABLE IF NOT EXISTS budget_usage (
    name TEXT NOT NULL,
    window_start DOUBLE PRECISION NOT NULL,
    dollars DOUBLE PRECISION NOT NULL,
    requests BIGINT NOT NULL,
    replica_seconds DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (name, window_start)
)"""
USAGE_ADD = (
    "INSERT INTO budget_usage (name, window_start, dollars, requests, replica_seconds) "
    "VALUES ({p}, {p}, {p}, {p}, {p}) ON CONFLICT (name, window_start) DO UPDATE SET "
    "dollars = budget_usage.dollars + excluded.dollars, "
    "requests = budget_usage.requests + excluded.requests, "
    "replica_seconds = budget_usage.replica_seconds + excluded.replica_seconds"
)
USAGE_SELECT = (
    "SELECT name, window_start, dollars, requests, replica_seconds FROM budget_usage "
    "WHERE window_start >= {p}"
)
UsageRowValues = tuple[str, float, float, int, float]

KEY_COLUMNS = (
    "id, key_hash, tenant, role, tier, rate, burst, concurrency, description, created_at, created_by, "
    "revoked_at"
)


class SecurityStore(Protocol):
    async def open(self) -> None:
        """Connect and create the schema if it is missing."""

    async def close(self) -> None: ...

    async def add_key(self, record: KeyRecord, changed_at: float) -> None: ...

    async def keys(self, *, include_revoked: bool) -> list[KeyRecord]: ...

    async def revoke_key(self, key_id: str, now: float) -> KeyRecord | None:
        """Revoke (if not yet revoked); the key as it is afterwards, or None if unknown."""

    async def keys_version(self) -> tuple[Any, ...]:
        """Changes whenever a key is added or revoked (by any server or the CLI)."""

    async def append(self, records: Sequence[AuditRecord]) -> None:
        """Store audit records in one transaction."""

    async def purge_audit(self, before: float) -> int:
        """Delete the audit records older than ``before`` (the retention); how many."""

    async def audit(self, query: AuditQuery) -> list[AuditRecord]:
        """Newest first, at most ``query.limit + 1`` (one more tells that a next page exists)."""

    async def add_usage(self, deltas: Sequence[UsageRowValues]) -> None:
        """Add budget and quota usage (name, window start, dollars, requests, replica-seconds) to
        the stored totals, in one transaction."""

    async def usage(self, since: float) -> list[UsageRowValues]:
        """Stored usage totals of every window that starts at or after ``since``."""


def open_security_store(database: str, state_dir: Path) -> SecurityStore:
    """The store that ``--database`` names (see ``tierserve.storage``)."""
    where = parse_database(database, state_dir)
    if where.postgres_url is not None:
        from tierserve.security.postgres_store import PostgresSecurityStore

        return PostgresSecurityStore(where.postgres_url)
    return _sqlite(where.sqlite_file(SQLITE_FILE))


def _sqlite(path: Path) -> SecurityStore:
    from tierserve.security.sqlite_store import SqliteSecurityStore

    return SqliteSecurityStore(path)


def key_row(record: KeyRecord) -> tuple[Any, ...]:
    limits = record.limits
    return (
        record.id,
        record.key_hash,
        record.tenant,
        str(record.role),
        record.tier,
        None if limits.rate is None else str(limits.rate),
        limits.burst,
        limits.concurrency,
        record.description,
        record.created_at,
        record.created_by,
        record.revoked_at,
    )


def key_from_row(row: Sequence[Any]) -> KeyRecord:
    """From a row of ``KEY_COLUMNS``."""
    return KeyRecord(
        id=row[0],
        key_hash=row[1],
        tenant=row[2],
        role=Role.parse(row[3]),
        tier=row[4],
        limits=Limits.parse(rate=row[5], burst=row[6], concurrency=row[7]),
        description=row[8] or "",
        created_at=float(row[9]),
        created_by=row[10] or "",
        revoked_at=None if row[11] is None else float(row[11]),
    )
