"""Single flight: concurrent identical misses run the model once, and all of them get its answer.

The first miss (the leader) runs the inference in its own task, as it would without a cache;
identical misses that arrive meanwhile (followers) wait for its answer instead of queueing their
own. One request's failure is never another's answer: when the leader fails or goes away (its
client disconnected), its followers get None and run their own inference. A follower that goes
away leaves the others alone.

Example::

    flight = flights.get(key)
    if flight is not None and flight.admits(priority):
        answer = await flight.follow()        # None: run your own
    else:
        answer = await flights.lead(key, priority, engine.infer(deployment, request, cached=False))
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Generic, TypeVar

T = TypeVar("T")


class Flight(Generic[T]):
    def __init__(self, priority: int) -> None:
        self.priority = priority
        self.result: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self.joined = 0  # followers, beyond the leader

    def admits(self, priority: int) -> bool:
        """A follower joins only a flight at least as urgent as itself (lower runs first): a gold
        request must not wait on a bronze one's place in the queue."""
        return not self.result.done() and self.priority <= priority

    async def follow(self) -> T | None:
        """The leader's answer, or None when the leader failed or went away."""
        self.joined += 1
        try:
            return await asyncio.shield(self.result)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # this follower itself is being cancelled
            return None  # the leader's flight was called off


class Flights(Generic[T]):
    def __init__(self) -> None:
        self._flights: dict[bytes, Flight[T]] = {}

    def __len__(self) -> int:
        return len(self._flights)

    def get(self, key: bytes) -> Flight[T] | None:
        return self._flights.get(key)

    async def lead(self, key: bytes, priority: int, work: Awaitable[T]) -> T:
        """Await ``work`` as the flight of ``key`` (replacing a less urgent one for newcomers)."""
        flight: Flight[T] = Flight(priority)
        self._flights[key] = flight
        try:
            result = await work
        except BaseException:
            flight.result.cancel()
            raise
        else:
            flight.result.set_result(result)
            return result
        finally:
            if self._flights.get(key) is flight:
                del self._flights[key]
