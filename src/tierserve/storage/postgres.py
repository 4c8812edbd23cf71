"""Every PostgreSQL store gets its connections here: one pool per database and event loop, shared by
the stores of a server that name the same ``--database`` (jobs, keys and audit, rollouts), so a
server holds one idle connection, not one per store. Each store adds its share to the pool's size
while it is open and creates its own tables under its own advisory lock (servers starting together
create them once). Example::

    pool = PostgresPool(url, "job database", SCHEMA, LOCK_KEY, share=8)
    await pool.open()
    async with pool.connection() as conn:
        await conn.execute("SELECT 1")
    await pool.close()   # the shared pool closes with its last store
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tierserve.errors import InvalidInput

if TYPE_CHECKING:
    from psycopg import AsyncConnection

OPEN_TIMEOUT_S = 15.0
_Key = tuple[asyncio.AbstractEventLoop, str]


@dataclass
class _Shared:
    pool: Any  # psycopg_pool.AsyncConnectionPool (imported only when PostgreSQL is used)
    opened: asyncio.Future[None]
    shares: list[int] = field(default_factory=list)  # each open store's share


_POOLS: dict[_Key, _Shared] = {}


class PostgresPool:
    """One store's part of the shared autocommit pool on ``conninfo``: ``share`` connections more
    while it is open, and its ``schema`` created at ``open`` (under the advisory lock ``lock_key``).
    ``what`` names the store in messages ("job database")."""

    def __init__(
        self, conninfo: str, what: str, schema: Sequence[str], lock_key: int, *, share: int = 2
    ) -> None:
        self.conninfo = conninfo
        self.what = what
        self.schema = schema
        self.lock_key = lock_key
        self.share = share
        self._key: _Key | None = None
        self._shared: _Shared | None = None

    async def open(self) -> None:
        """Join (or open) the pool and create the schema; an unreachable database is an InvalidInput."""
        loop = asyncio.get_running_loop()
        key = (loop, self.conninfo)
        shared = _POOLS.get(key)
        if shared is None:
            shared = _POOLS[key] = _Shared(_new_pool(self.conninfo), loop.create_future())
            await _open(key, shared, self.what)
        else:
            await asyncio.shield(shared.opened)  # another store of this server may be opening it
        shared.shares.append(self.share)
        self._key, self._shared = key, shared
        try:
            await shared.pool.resize(1, sum(shared.shares))
            async with shared.pool.connection() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", (self.lock_key,))
                for statement in self.schema:
                    await conn.execute(statement)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Leave the pool; the last store to leave closes it."""
        shared, key = self._shared, self._key
        if shared is None or key is None:
            return
        self._shared = self._key = None
        shared.shares.remove(self.share)
        if shared.shares:
            await shared.pool.resize(1, sum(shared.shares))
            return
        if _POOLS.get(key) is shared:
            del _POOLS[key]
        await shared.pool.close()

    @property
    def max_size(self) -> int:
        """Connections the shared pool may open: the shares of its open stores together."""
        size: int = self._pool().max_size
        return size

    def connection(
        self, timeout: float | None = None
    ) -> contextlib.AbstractAsyncContextManager[AsyncConnection[Any]]:
        """A connection (autocommit) for ``async with``; given back when the block ends."""
        cm: contextlib.AbstractAsyncContextManager[AsyncConnection[Any]] = self._pool().connection(
            timeout=timeout
        )
        return cm

    def _pool(self) -> Any:
        if self._shared is None:
            raise RuntimeError(f"the {self.what} is not open")
        return self._shared.pool


def _new_pool(conninfo: str) -> Any:
    from psycopg_pool import AsyncConnectionPool

    return AsyncConnectionPool(
        conninfo, min_size=1, max_size=1, kwargs={"autocommit": True}, open=False, name="tierserve"
    )


async def _open(key: _Key, shared: _Shared, what: str) -> None:
    """Open a new shared pool; on failure it is forgotten (the next store tries afresh) and every
    store waiting for it hears why."""
    import psycopg

    try:
        await shared.pool.open(wait=True, timeout=OPEN_TIMEOUT_S)
    except BaseException as exc:
        if _POOLS.get(key) is shared:
            del _POOLS[key]
        await shared.pool.close()
        if not isinstance(exc, psycopg.Error):  # PoolTimeout is one
            shared.opened.cancel()
            raise
        error = InvalidInput(f"cannot connect to the {what}: {exc}")
        shared.opened.set_exception(error)
        shared.opened.exception()  # marked retrieved: there may be no other store waiting
        raise error from exc
    shared.opened.set_result(None)
