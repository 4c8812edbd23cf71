"""Group commit: batching while a write is in flight, one answer per caller, errors kept apart."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from tierserve.storage.group_commit import GroupCommit

pytestmark = pytest.mark.anyio


class Recorder:
    def __init__(self, fail_on: int | None = None) -> None:
        self.batches: list[list[int]] = []
        self.fail_on = fail_on
        self.release = asyncio.Event()

    async def flush(self, items: Sequence[int]) -> list[int | BaseException]:
        self.batches.append(list(items))
        if len(self.batches) == 1:
            await self.release.wait()  # hold the first write so that the others queue behind it
        return [ValueError(f"bad {i}") if i == self.fail_on else i * 10 for i in items]


async def test_items_that_arrive_during_a_write_share_the_next_one() -> None:
    recorder = Recorder()
    commit: GroupCommit[int, int] = GroupCommit(recorder.flush)
    first = asyncio.create_task(commit.submit(0))
    await asyncio.sleep(0)
    rest = [asyncio.create_task(commit.submit(i)) for i in range(1, 6)]
    await asyncio.sleep(0)
    recorder.release.set()
    assert await first == 0
    assert [await task for task in rest] == [10, 20, 30, 40, 50]
    assert recorder.batches == [[0], [1, 2, 3, 4, 5]]


async def test_a_failed_item_fails_only_its_caller() -> None:
    recorder = Recorder(fail_on=2)
    recorder.release.set()
    commit: GroupCommit[int, int] = GroupCommit(recorder.flush)
    results = await asyncio.gather(*(commit.submit(i) for i in range(4)), return_exceptions=True)
    assert results[0] == 0 and results[1] == 10 and results[3] == 30
    assert isinstance(results[2], ValueError)


async def test_a_failed_write_fails_every_caller_of_its_batch_and_the_next_batch_still_runs() -> None:
    calls = 0

    async def flush(items: Sequence[int]) -> list[int | BaseException]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError("disk gone")
        return list(items)

    commit: GroupCommit[int, int] = GroupCommit(flush)
    results = await asyncio.gather(commit.submit(1), commit.submit(2), return_exceptions=True)
    assert all(isinstance(r, OSError) for r in results)
    assert await commit.submit(3) == 3


async def test_batches_are_bounded() -> None:
    sizes: list[int] = []

    async def flush(items: Sequence[int]) -> list[int | BaseException]:
        sizes.append(len(items))
        await asyncio.sleep(0)
        return list(items)

    commit: GroupCommit[int, int] = GroupCommit(flush, max_batch=4)
    assert await asyncio.gather(*(commit.submit(i) for i in range(10))) == list(range(10))
    assert max(sizes) <= 4 and sum(sizes) == 10
