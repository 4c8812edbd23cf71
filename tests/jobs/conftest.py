"""Fixtures for the job suite: one store contract, run against SQLite and a real PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from jobs import pg
from tierserve.jobs.store import JobStore, open_store

StoreFactory = Callable[[], JobStore]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["sqlite", "postgres"])
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    """Makes unopened stores on one fresh database; several share it (as several servers would)."""
    database = "" if request.param == "sqlite" else pg.fresh_database()
    return lambda: open_store(database, tmp_path)


@pytest.fixture
async def store(store_factory: StoreFactory) -> AsyncIterator[JobStore]:
    opened = store_factory()
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()
