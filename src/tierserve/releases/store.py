"""Where rollouts live: SQLite ``rollouts.db`` beside the job database (default), or the PostgreSQL
database of ``--database``, shared by every server.

One row per rollout, its state as a JSON document plus the columns queries need. At most one row
per model is *current* (``archived = 0``, a partial unique index): the rollout that routes the
model's traffic, stepping or finished. Starting another archives a finished one; a stepping one
makes it a 409. Every change is a compare-and-set on ``revision``, so servers sharing the database
never overwrite each other's decisions: the loser reloads and sees the winner's.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from tierserve.errors import Conflict
from tierserve.rollout import Rollout
from tierserve.storage.database import parse_database
from tierserve.storage.sqlite import SqliteOnThread, in_transaction

SQLITE_FILE = "rollouts.db"

_COLUMNS = "id, model, candidate, phase, revision, archived, doc, updated_at"

Statement = tuple[str, Sequence[Any]]


class RolloutConflict(Conflict):
    """Another rollout of the model is stepping, or another server changed this one first."""


@dataclass(frozen=True)
class Stored:
    rollout: Rollout
    revision: int


class RolloutStore:
    """The queries, for either database; a subclass runs statements in one transaction."""

    placeholder = "?"

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def _transaction(self, statements: Sequence[Statement]) -> tuple[list[tuple[Any, ...]], int]:
        """Run ``statements`` in one transaction: the rows of the last, and its row count."""
        raise NotImplementedError

    def _sql(self, sql: str) -> str:
        return sql.replace("?", self.placeholder)

    async def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[Stored]:
        rows, _ = await self._transaction([(self._sql(sql), params)])
        return [_stored(row) for row in rows]

    async def current(self) -> list[Stored]:
        return await self._rows(f"SELECT {_COLUMNS} FROM rollouts WHERE archived = 0 ORDER BY model")

    async def find(self, model: str) -> Stored | None:
        rows = await self._rows(f"SELECT {_COLUMNS} FROM rollouts WHERE archived = 0 AND model = ?", (model,))
        return rows[0] if rows else None

    async def declared(self, model: str, candidate: int) -> bool:
        """Whether any rollout of ``candidate`` was ever started for ``model`` (archived ones too)."""
        rows, _ = await self._transaction(
            [(self._sql("SELECT 1 FROM rollouts WHERE model = ? AND candidate = ?"), (model, candidate))]
        )
        return bool(rows)

    async def create(self, rollout: Rollout, now: float) -> Stored:
        archive = (
            "UPDATE rollouts SET archived = 1, updated_at = ? WHERE model = ? AND archived = 0 AND phase <> ?"
        )
        insert = f"INSERT INTO rollouts ({_COLUMNS}) VALUES (?, ?, ?, ?, 1, 0, ?, ?)"
        try:
            await self._transaction(
                [
                    (self._sql(archive), (now, rollout.model, "stepping")),
                    (self._sql(insert), (*_row(rollout), now)),
                ]
            )
        except Exception as exc:
            if _is_unique_violation(exc):
                raise RolloutConflict(
                    f"a rollout of '{rollout.model}' is already stepping; promote, roll back or "
                    "delete it first"
                ) from None
            raise
        return Stored(rollout, 1)

    async def update(self, stored: Stored, rollout: Rollout, now: float) -> Stored | None:
        """Store ``rollout`` over ``stored`` if nobody changed it meanwhile; None if somebody did."""
        sql = (
            "UPDATE rollouts SET phase = ?, doc = ?, revision = revision + 1, updated_at = ? "
            "WHERE id = ? AND revision = ?"
        )
        _, count = await self._transaction(
            [(self._sql(sql), (str(rollout.phase), _doc(rollout), now, rollout.id, stored.revision))]
        )
        return Stored(rollout, stored.revision + 1) if count == 1 else None

    async def archive(self, stored: Stored, now: float) -> bool:
        sql = (
            "UPDATE rollouts SET archived = 1, revision = revision + 1, updated_at = ? "
            "WHERE id = ? AND revision = ?"
        )
        _, count = await self._transaction([(self._sql(sql), (now, stored.rollout.id, stored.revision))])
        return count == 1


_TABLE = """CREATE TABLE IF NOT EXISTS rollouts (
    id TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    candidate INTEGER NOT NULL,
    phase TEXT NOT NULL,
    revision INTEGER NOT NULL,
    archived INTEGER NOT NULL,
    doc TEXT NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL
)"""
_INDEX = "CREATE UNIQUE INDEX IF NOT EXISTS rollouts_current ON rollouts (model) WHERE archived = 0"


class SqliteRolloutStore(RolloutStore):
    """On a thread of its own: the event loop never waits on the file."""

    def __init__(self, path: Path) -> None:
        self.db = SqliteOnThread(path, (_TABLE, _INDEX), "rollout database")

    async def open(self) -> None:
        await self.db.open()

    async def close(self) -> None:
        await self.db.close()

    async def _transaction(self, statements: Sequence[Statement]) -> tuple[list[tuple[Any, ...]], int]:
        return await self.db.run(self._execute, statements)

    def _execute(self, statements: Sequence[Statement]) -> tuple[list[tuple[Any, ...]], int]:
        def run(db: sqlite3.Connection) -> tuple[list[tuple[Any, ...]], int]:
            for sql, params in statements:
                cursor = db.execute(sql, params)
            return cursor.fetchall(), cursor.rowcount

        return in_transaction(self.db.conn, run, immediate=True)


def open_rollout_store(database: str, state_dir: Path) -> RolloutStore:
    """The store that ``--database`` names (see ``tierserve.storage``)."""
    where = parse_database(database, state_dir)
    if where.postgres_url is not None:
        from tierserve.releases.postgres import PostgresRolloutStore

        return PostgresRolloutStore(where.postgres_url)
    return SqliteRolloutStore(where.sqlite_file(SQLITE_FILE))


def _doc(rollout: Rollout) -> str:
    return orjson.dumps(rollout.describe()).decode()


def _row(rollout: Rollout) -> tuple[Any, ...]:
    return (rollout.id, rollout.model, rollout.candidate, str(rollout.phase), _doc(rollout))


def _stored(row: Sequence[Any]) -> Stored:
    """From a row of ``_COLUMNS``."""
    return Stored(Rollout.from_doc(orjson.loads(row[6])), int(row[4]))


def _is_unique_violation(exc: Exception) -> bool:
    if isinstance(exc, sqlite3.IntegrityError):
        return True
    return type(exc).__name__ == "UniqueViolation"  # psycopg's, without importing psycopg here
