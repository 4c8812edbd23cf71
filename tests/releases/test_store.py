"""The rollout store's contract, on SQLite and on a real PostgreSQL (scripts/postgres.sh)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from jobs import pg
from tierserve.releases.store import RolloutConflict, RolloutStore, open_rollout_store
from tierserve.rollout import Phase, Rollout, RolloutPlan, promote, rollback, start

Factory = Callable[[], RolloutStore]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["sqlite", "postgres"])
def factory(request: pytest.FixtureRequest, tmp_path: Path) -> Factory:
    database = "" if request.param == "sqlite" else pg.fresh_database()
    return lambda: open_rollout_store(database, tmp_path)


@pytest.fixture
async def store(factory: Factory) -> AsyncIterator[RolloutStore]:
    opened = factory()
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


def _rollout(rollout_id: str, model: str = "m", candidate: int = 2) -> Rollout:
    return start(
        model, RolloutPlan.parse({"candidate": candidate}), stable=1, now=100.0, rollout_id=rollout_id
    )


@pytest.mark.anyio
async def test_one_stepping_rollout_per_model(store: RolloutStore) -> None:
    stored = await store.create(_rollout("a"), now=100.0)
    assert stored.revision == 1
    with pytest.raises(RolloutConflict):
        await store.create(_rollout("b"), now=101.0)
    await store.create(_rollout("c", model="other"), now=101.0)  # other models are independent
    found = await store.find("m")
    assert found is not None and found.rollout == stored.rollout
    assert [s.rollout.id for s in await store.current()] == ["a", "c"]


@pytest.mark.anyio
async def test_changes_are_compare_and_set(store: RolloutStore) -> None:
    stored = await store.create(_rollout("a"), now=100.0)
    promoted = await store.update(stored, promote(stored.rollout, 110.0, "ops"), now=110.0)
    assert promoted is not None and promoted.revision == 2
    # a second writer that read revision 1 loses: its decision is not stored
    assert await store.update(stored, rollback(stored.rollout, 111.0, "judge"), now=111.0) is None
    found = await store.find("m")
    assert found is not None and found.rollout.phase is Phase.PROMOTED and found.revision == 2


@pytest.mark.anyio
async def test_a_finished_rollout_is_archived_by_the_next(store: RolloutStore) -> None:
    stored = await store.create(_rollout("a"), now=100.0)
    done = await store.update(stored, rollback(stored.rollout, 101.0, "ops"), now=101.0)
    assert done is not None
    await store.create(_rollout("b", candidate=3), now=102.0)
    assert [s.rollout.id for s in await store.current()] == ["b"]
    assert await store.declared("m", 2) and await store.declared("m", 3) and not await store.declared("m", 4)


@pytest.mark.anyio
async def test_archive_and_survive_reopening(factory: Factory) -> None:
    first = factory()
    await first.open()
    stored = await first.create(_rollout("a"), now=100.0)
    await first.close()
    second = factory()
    await second.open()
    try:
        found = await second.find("m")
        assert found is not None and found.rollout == stored.rollout
        assert await second.archive(found, now=120.0)
        assert await second.find("m") is None and await second.current() == []
    finally:
        await second.close()
