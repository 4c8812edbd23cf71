"""Keys and the audit log in PostgreSQL: the same database as the jobs, shared by every server."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tierserve.security.audit_records import COLUMNS, AuditQuery, AuditRecord, record_from_row, record_row
from tierserve.security.keys import KeyRecord
from tierserve.security.store import (
    KEY_COLUMNS,
    USAGE_ADD,
    USAGE_SCHEMA,
    USAGE_SELECT,
    UsageRowValues,
    key_from_row,
    key_row,
)
from tierserve.storage.postgres import PostgresPool

_SCHEMA_LOCK = 0x7473736563757269  # pg_advisory_xact_lock key: servers starting together create it once

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS api_keys (
        id TEXT PRIMARY KEY,
        key_hash TEXT NOT NULL UNIQUE,
        tenant TEXT NOT NULL,
        role TEXT NOT NULL,
        tier TEXT,
        rate TEXT,
        burst INTEGER,
        concurrency INTEGER,
        description TEXT,
        created_at DOUBLE PRECISION NOT NULL,
        created_by TEXT,
        revoked_at DOUBLE PRECISION,
        changed_at DOUBLE PRECISION NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS audit_log (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        at DOUBLE PRECISION NOT NULL,
        kind TEXT NOT NULL,
        action TEXT NOT NULL,
        key_id TEXT NOT NULL,
        tenant TEXT,
        status INTEGER NOT NULL,
        target TEXT,
        detail TEXT,
        model TEXT,
        version TEXT,
        tier TEXT,
        latency_ms DOUBLE PRECISION,
        pool TEXT,
        cost DOUBLE PRECISION
    )""",
    "CREATE INDEX IF NOT EXISTS audit_at ON audit_log (at)",
    "CREATE INDEX IF NOT EXISTS audit_tenant ON audit_log (tenant, seq)",
    "CREATE INDEX IF NOT EXISTS audit_action ON audit_log (action, seq)",
    # Append-only, except the retention purge: only records older than its latest cut-off go.
    "CREATE TABLE IF NOT EXISTS audit_retention (before DOUBLE PRECISION NOT NULL)",
    """CREATE OR REPLACE FUNCTION tierserve_audit_append_only() RETURNS trigger AS $$
        BEGIN
            IF TG_OP = 'DELETE'
               AND OLD.at < (SELECT coalesce(max(before), 0) FROM audit_retention) THEN
                RETURN OLD;
            END IF;
            RAISE EXCEPTION 'the audit log is append-only';
        END $$ LANGUAGE plpgsql""",
    "DROP TRIGGER IF EXISTS audit_append_only ON audit_log",
    """CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON audit_log
        FOR EACH ROW EXECUTE FUNCTION tierserve_audit_append_only()""",
]
_INSERT_AUDIT = f"INSERT INTO audit_log ({', '.join(COLUMNS)}) VALUES ({', '.join(['%s'] * len(COLUMNS))})"


class PostgresSecurityStore:
    def __init__(self, conninfo: str) -> None:
        self.conninfo = conninfo
        self._pool = PostgresPool(conninfo, "security database", [*_SCHEMA, USAGE_SCHEMA], _SCHEMA_LOCK)

    async def open(self) -> None:
        await self._pool.open()

    async def close(self) -> None:
        await self._pool.close()

    async def _all(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        async with self._pool.connection() as conn:
            cursor = await conn.execute(query, params)
            return await cursor.fetchall()

    async def add_key(self, record: KeyRecord, changed_at: float) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(
                f"INSERT INTO api_keys ({KEY_COLUMNS}, changed_at) VALUES ({', '.join(['%s'] * 13)})",
                (*key_row(record), changed_at),
            )

    async def keys(self, *, include_revoked: bool) -> list[KeyRecord]:
        where = "" if include_revoked else "WHERE revoked_at IS NULL"
        rows = await self._all(f"SELECT {KEY_COLUMNS} FROM api_keys {where} ORDER BY created_at")
        return [key_from_row(row) for row in rows]

    async def revoke_key(self, key_id: str, now: float) -> KeyRecord | None:
        async with self._pool.connection() as conn:
            await conn.execute(
                "UPDATE api_keys SET revoked_at = %s, changed_at = %s WHERE id = %s AND revoked_at IS NULL",
                (now, now, key_id),
            )
            cursor = await conn.execute(f"SELECT {KEY_COLUMNS} FROM api_keys WHERE id = %s", (key_id,))
            row = await cursor.fetchone()
        return None if row is None else key_from_row(row)

    async def keys_version(self) -> tuple[Any, ...]:
        rows = await self._all("SELECT count(*), count(revoked_at), max(changed_at) FROM api_keys")
        return tuple(rows[0])

    async def add_usage(self, deltas: Sequence[UsageRowValues]) -> None:
        async with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cursor:
            await cursor.executemany(USAGE_ADD.format(p="%s"), list(deltas))

    async def usage(self, since: float) -> list[UsageRowValues]:
        rows = await self._all(USAGE_SELECT.format(p="%s"), (since,))
        return [(str(r[0]), float(r[1]), float(r[2]), int(r[3]), float(r[4])) for r in rows]

    async def append(self, records: Sequence[AuditRecord]) -> None:
        async with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cursor:
            await cursor.executemany(_INSERT_AUDIT, [record_row(r) for r in records])

    async def purge_audit(self, before: float) -> int:
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute("INSERT INTO audit_retention (before) VALUES (%s)", (before,))
            cursor = await conn.execute("DELETE FROM audit_log WHERE at < %s", (before,))
            return cursor.rowcount

    async def audit(self, query: AuditQuery) -> list[AuditRecord]:
        where, params = query.where("%s")
        rows = await self._all(
            f"SELECT seq, {', '.join(COLUMNS)} FROM audit_log {where} ORDER BY seq DESC LIMIT %s",
            (*params, query.limit + 1),
        )
        return [record_from_row(tuple(row)) for row in rows]
