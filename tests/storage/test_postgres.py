"""One PostgreSQL pool per database for a server's stores, on a real PostgreSQL
(scripts/postgres.sh): the jobs, security and rollout stores of one server hold one idle connection
between them, the pool is as large as their shares together, and it closes with the last store."""

from __future__ import annotations

import psycopg
import pytest

from jobs import pg
from tierserve.jobs.postgres import PostgresJobStore
from tierserve.releases.postgres import PostgresRolloutStore
from tierserve.security.postgres_store import PostgresSecurityStore
from tierserve.storage.postgres import PostgresPool

pytestmark = pytest.mark.anyio


def connections(dsn: str) -> int:
    """Client connections to the database of ``dsn`` besides the one asking."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()
    assert row is not None
    return int(row[0])


async def test_the_stores_of_one_server_share_one_pool() -> None:
    dsn = pg.fresh_database()
    jobs, security, rollouts = PostgresJobStore(dsn), PostgresSecurityStore(dsn), PostgresRolloutStore(dsn)
    for store in (jobs, security, rollouts):
        await store.open()
    try:
        assert connections(dsn) == 1  # one pool at its minimum, not one per store
        handle = PostgresPool(dsn, "test database", ["SELECT 1"], 1, share=3)
        await handle.open()
        assert handle.max_size == jobs.max_connections + 2 + 2 + 3  # the stores' shares together
        await handle.close()
        await jobs.close()
        async with security._pool.connection() as conn:  # the others keep it open
            assert await (await conn.execute("SELECT count(*) FROM api_keys")).fetchone() == (0,)
        assert security._pool.max_size == 2 + 2
    finally:
        for store in (security, rollouts):
            await store.close()
    assert connections(dsn) == 0  # closed with the last store


async def test_each_store_creates_its_own_tables_on_the_shared_pool() -> None:
    dsn = pg.fresh_database()
    security, jobs = PostgresSecurityStore(dsn), PostgresJobStore(dsn)
    await security.open()
    await jobs.open()  # the pool exists already: the job tables are still created
    try:
        async with jobs._pool.connection() as conn:
            cursor = await conn.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_name IN ('jobs', 'api_keys')"
            )
            assert await cursor.fetchone() == (2,)
    finally:
        await jobs.close()
        await security.close()
