"""Single flight: one inference for identical concurrent misses; nobody hangs, nobody inherits an
error, and the inference is cancelled only when nobody waits for it any more."""

from __future__ import annotations

import asyncio

import pytest

from tierserve.cache.flight import Flight, Flights


class Work:
    """An inference stand-in that runs until released."""

    def __init__(self) -> None:
        self.started = 0
        self.release = asyncio.Event()
        self.cancelled = False

    async def __call__(self, value: str) -> str:
        self.started += 1
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        if value == "boom":
            raise RuntimeError("failed")
        return value


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


def test_followers_share_the_leaders_result_and_it_lands_once() -> None:
    async def scenario() -> None:
        work, landed = Work(), []
        flights: Flights[str] = Flights()
        flight = flights.start(b"k", 1, work("answer"), landed.append)
        assert flights.get(b"k") is flight and flight.admits(1) and flight.admits(2)
        waiting = [asyncio.create_task(flight.wait()) for _ in range(10)]
        await asyncio.sleep(0)
        work.release.set()
        assert await asyncio.gather(*waiting) == ["answer"] * 10
        assert work.started == 1 and landed == [flight]
        assert flights.get(b"k") is None and len(flights) == 0

    run(scenario())


def test_a_more_urgent_request_does_not_join_a_less_urgent_flight() -> None:
    async def scenario() -> None:
        work = Work()
        flight: Flight[str] = Flights[str]().start(b"k", 2, work("x"), lambda _: None)
        assert not flight.admits(0)  # gold does not wait behind bronze
        work.release.set()
        await flight.wait()
        assert not flight.admits(2)  # done: nothing left to join

    run(scenario())


def test_the_leader_leaving_does_not_cancel_the_inference_others_wait_for() -> None:
    async def scenario() -> None:
        work = Work()
        flight = Flights[str]().start(b"k", 1, work("answer"), lambda _: None)
        leader = asyncio.create_task(flight.wait())
        follower = asyncio.create_task(flight.wait())
        await asyncio.sleep(0)
        leader.cancel()
        await asyncio.sleep(0)
        assert not work.cancelled
        work.release.set()
        assert await follower == "answer"
        with pytest.raises(asyncio.CancelledError):
            await leader

    run(scenario())


def test_the_last_waiter_leaving_cancels_the_inference() -> None:
    async def scenario() -> None:
        work, landed = Work(), []
        flight = Flights[str]().start(b"k", 1, work("answer"), landed.append)
        waiters = [asyncio.create_task(flight.wait()) for _ in range(2)]
        await asyncio.sleep(0)
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
        await asyncio.sleep(0)
        assert work.cancelled and flight.task.cancelled() and landed == [flight]

    run(scenario())


def test_a_failure_reaches_every_waiter_and_the_flight_is_gone() -> None:
    async def scenario() -> None:
        work = Work()
        flights: Flights[str] = Flights()
        flight = flights.start(b"k", 1, work("boom"), lambda _: None)
        waiting = [asyncio.create_task(flight.wait()) for _ in range(3)]
        await asyncio.sleep(0)
        work.release.set()
        results = await asyncio.gather(*waiting, return_exceptions=True)
        assert all(isinstance(r, RuntimeError) for r in results)
        assert flights.get(b"k") is None

    run(scenario())
