"""Keys and the audit log in SQLite (``tierserve.storage.sqlite``: WAL, fail-closed identity), on a
thread of their own: nothing here runs on the event loop, and no request waits on it (keys are
served from memory, audit records are queued)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

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
from tierserve.storage.sqlite import SqliteOnThread

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    key_hash TEXT NOT NULL UNIQUE,
    tenant TEXT NOT NULL,
    role TEXT NOT NULL,
    tier TEXT,
    rate TEXT,
    burst INTEGER,
    concurrency INTEGER,
    description TEXT,
    created_at REAL NOT NULL,
    created_by TEXT,
    revoked_at REAL,
    changed_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS audit_log (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
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
    latency_ms REAL,
    pool TEXT,
    cost REAL
);
CREATE INDEX IF NOT EXISTS audit_at ON audit_log (at);
CREATE INDEX IF NOT EXISTS audit_tenant ON audit_log (tenant, seq);
CREATE INDEX IF NOT EXISTS audit_action ON audit_log (action, seq);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit_log
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
-- Append-only, except the retention purge: it records its cut-off first, and only records older
-- than the latest cut-off may be deleted.
CREATE TABLE IF NOT EXISTS audit_retention (before REAL NOT NULL);
DROP TRIGGER IF EXISTS audit_no_delete;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit_log
    WHEN old.at >= (SELECT coalesce(max(before), 0) FROM audit_retention)
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"""
_INSERT_AUDIT = f"INSERT INTO audit_log ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"


class SqliteSecurityStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        # A missing, emptied or corrupt security.db must never mean "no keys, authentication off".
        self._db = SqliteOnThread(path, (_SCHEMA, USAGE_SCHEMA), "security database", identity=True)

    async def open(self) -> None:
        await self._db.open()

    async def close(self) -> None:
        await self._db.close()

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._db.run(fn, *args)

    @property
    def _conn(self) -> sqlite3.Connection:
        return self._db.conn

    async def add_key(self, record: KeyRecord, changed_at: float) -> None:
        await self._run(
            self._conn.execute,
            f"INSERT INTO api_keys ({KEY_COLUMNS}, changed_at) VALUES ({', '.join('?' * 13)})",
            (*key_row(record), changed_at),
        )

    async def keys(self, *, include_revoked: bool) -> list[KeyRecord]:
        where = "" if include_revoked else "WHERE revoked_at IS NULL"
        return await self._run(
            self._fetch_keys, f"SELECT {KEY_COLUMNS} FROM api_keys {where} ORDER BY created_at"
        )

    def _fetch_keys(self, query: str) -> list[KeyRecord]:
        return [key_from_row(row) for row in self._conn.execute(query).fetchall()]

    async def revoke_key(self, key_id: str, now: float) -> KeyRecord | None:
        return await self._run(self._revoke, key_id, now)

    def _revoke(self, key_id: str, now: float) -> KeyRecord | None:
        self._conn.execute(
            "UPDATE api_keys SET revoked_at = ?, changed_at = ? WHERE id = ? AND revoked_at IS NULL",
            (now, now, key_id),
        )
        row = self._conn.execute(f"SELECT {KEY_COLUMNS} FROM api_keys WHERE id = ?", (key_id,)).fetchone()
        return None if row is None else key_from_row(row)

    async def keys_version(self) -> tuple[Any, ...]:
        return await self._run(self._version)

    def _version(self) -> tuple[Any, ...]:
        row = self._conn.execute(
            "SELECT count(*), count(revoked_at), max(changed_at) FROM api_keys"
        ).fetchone()
        return tuple(row)

    async def add_usage(self, deltas: Sequence[UsageRowValues]) -> None:
        await self._run(self._add_usage, list(deltas))

    def _add_usage(self, rows: list[UsageRowValues]) -> None:
        self._db.transaction(lambda db: db.executemany(USAGE_ADD.format(p="?"), rows))

    async def usage(self, since: float) -> list[UsageRowValues]:
        return await self._run(self._usage, since)

    def _usage(self, since: float) -> list[UsageRowValues]:
        rows = self._conn.execute(USAGE_SELECT.format(p="?"), (since,))
        return [(str(r[0]), float(r[1]), float(r[2]), int(r[3]), float(r[4])) for r in rows]

    async def append(self, records: Sequence[AuditRecord]) -> None:
        await self._run(self._append, [record_row(r) for r in records])

    def _append(self, rows: list[tuple[Any, ...]]) -> None:
        self._db.transaction(lambda db: db.executemany(_INSERT_AUDIT, rows))

    async def purge_audit(self, before: float) -> int:
        return await self._run(self._purge_audit, before)

    def _purge_audit(self, before: float) -> int:
        def purge(db: sqlite3.Connection) -> int:
            db.execute("INSERT INTO audit_retention (before) VALUES (?)", (before,))
            return int(db.execute("DELETE FROM audit_log WHERE at < ?", (before,)).rowcount)

        return self._db.transaction(purge)

    async def audit(self, query: AuditQuery) -> list[AuditRecord]:
        where, params = query.where("?")
        sql = f"SELECT seq, {', '.join(COLUMNS)} FROM audit_log {where} ORDER BY seq DESC LIMIT ?"
        rows = await self._run(lambda: self._conn.execute(sql, (*params, query.limit + 1)).fetchall())
        return [record_from_row(tuple(row)) for row in rows]
