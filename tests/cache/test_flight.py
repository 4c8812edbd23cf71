"""Single flight: one inference for identical concurrent misses; nobody hangs, nobody inherits
another request's error or cancellation."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from tierserve.cache.flight import Flights


class Work:
    """An inference stand-in that runs until released."""

    def __init__(self) -> None:
        self.started = 0
        self.release = asyncio.Event()

    async def __call__(self, value: str) -> str:
        self.started += 1
        await self.release.wait()
        if value == "boom":
            raise RuntimeError("failed")
        return value


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(scenario())


async def started(flights: Flights[str], work: Work, value: str, priority: int = 1) -> asyncio.Task[str]:
    leader = asyncio.create_task(flights.lead(b"k", priority, work(value)))
    await asyncio.sleep(0)
    return leader


def test_followers_share_the_leaders_answer_and_the_work_runs_once() -> None:
    async def scenario() -> None:
        work, flights = Work(), Flights[str]()
        leader = await started(flights, work, "answer")
        flight = flights.get(b"k")
        assert flight is not None and flight.admits(1) and flight.admits(2)
        followers = [asyncio.create_task(flight.follow()) for _ in range(9)]
        await asyncio.sleep(0)
        work.release.set()
        assert await leader == "answer"
        assert await asyncio.gather(*followers) == ["answer"] * 9
        assert work.started == 1 and flight.joined == 9
        assert flights.get(b"k") is None and len(flights) == 0

    run(scenario)


def test_a_more_urgent_request_does_not_join_a_less_urgent_flight() -> None:
    async def scenario() -> None:
        work, flights = Work(), Flights[str]()
        leader = await started(flights, work, "x", priority=2)
        flight = flights.get(b"k")
        assert flight is not None and not flight.admits(0) and flight.admits(2)
        work.release.set()
        await leader
        assert not flight.admits(2)  # done: nothing left to join

    run(scenario)


def test_the_leaders_failure_is_not_its_followers_they_get_none() -> None:
    async def scenario() -> None:
        work, flights = Work(), Flights[str]()
        leader = await started(flights, work, "boom")
        flight = flights.get(b"k")
        assert flight is not None
        followers = [asyncio.create_task(flight.follow()) for _ in range(3)]
        await asyncio.sleep(0)
        work.release.set()
        with pytest.raises(RuntimeError):
            await leader
        assert await asyncio.gather(*followers) == [None] * 3
        assert flights.get(b"k") is None

    run(scenario)


def test_a_leader_that_goes_away_releases_its_followers_with_none() -> None:
    async def scenario() -> None:
        work, flights = Work(), Flights[str]()
        leader = await started(flights, work, "answer")
        flight = flights.get(b"k")
        assert flight is not None
        follower = asyncio.create_task(flight.follow())
        await asyncio.sleep(0)
        leader.cancel()
        assert await follower is None
        with pytest.raises(asyncio.CancelledError):
            await leader

    run(scenario)


def test_a_follower_that_goes_away_leaves_the_others_alone() -> None:
    async def scenario() -> None:
        work, flights = Work(), Flights[str]()
        leader = await started(flights, work, "answer")
        flight = flights.get(b"k")
        assert flight is not None
        leaving, staying = asyncio.create_task(flight.follow()), asyncio.create_task(flight.follow())
        await asyncio.sleep(0)
        leaving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await leaving
        work.release.set()
        assert await leader == "answer" and await staying == "answer"

    run(scenario)
