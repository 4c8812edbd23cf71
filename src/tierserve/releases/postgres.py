"""Rollouts in PostgreSQL: the same database as the jobs and keys, shared by every server, so all
of them route each request of a rollout the same way and see each other's decisions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tierserve.releases.store import _INDEX, _TABLE, RolloutStore, Statement
from tierserve.storage.postgres import PostgresPool

_SCHEMA_LOCK = 0x74737270726F6C6C  # pg_advisory_xact_lock key: servers starting together create it once


class PostgresRolloutStore(RolloutStore):
    placeholder = "%s"

    def __init__(self, conninfo: str) -> None:
        self.conninfo = conninfo
        self._pool = PostgresPool(conninfo, "rollout database", (_TABLE, _INDEX), _SCHEMA_LOCK)

    async def open(self) -> None:
        await self._pool.open()

    async def close(self) -> None:
        await self._pool.close()

    async def _transaction(self, statements: Sequence[Statement]) -> tuple[list[tuple[Any, ...]], int]:
        async with self._pool.connection() as conn, conn.transaction():
            for sql, params in statements:
                cursor = await conn.execute(sql, params)
            rows = await cursor.fetchall() if cursor.description is not None else []
            return [tuple(row) for row in rows], cursor.rowcount
