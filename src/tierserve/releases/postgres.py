"""Rollouts in PostgreSQL: the same database as the jobs and keys, shared by every server, so all
of them route each request of a rollout the same way and see each other's decisions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from tierserve.errors import InvalidInput
from tierserve.releases.store import _INDEX, _TABLE, RolloutStore, Statement

_SCHEMA_LOCK = 0x74737270726F6C6C  # pg_advisory_xact_lock key: servers starting together create it once


class PostgresRolloutStore(RolloutStore):
    placeholder = "%s"
    schema = (_TABLE, _INDEX)

    def __init__(self, conninfo: str) -> None:
        self._pool = AsyncConnectionPool(
            conninfo,
            min_size=1,
            max_size=2,
            kwargs={"autocommit": True},
            open=False,
            name="tierserve-rollouts",
        )

    async def open(self) -> None:
        try:
            await self._pool.open(wait=True, timeout=15.0)
        except psycopg.Error as exc:
            await self._pool.close()
            raise InvalidInput(f"cannot connect to the rollout database: {exc}") from exc
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            for statement in self.schema:
                await conn.execute(statement)

    async def close(self) -> None:
        await self._pool.close()

    async def _transaction(self, statements: Sequence[Statement]) -> tuple[list[tuple[Any, ...]], int]:
        async with self._pool.connection() as conn, conn.transaction():
            for sql, params in statements:
                cursor = await conn.execute(sql, params)
            rows = await cursor.fetchall() if cursor.description is not None else []
            return [tuple(row) for row in rows], cursor.rowcount
