"""Single flight: concurrent identical misses run the model once, and all of them get its answer.

The first miss (the leader) starts the inference as a task of its own; identical misses that arrive
while it runs join it instead of queueing their own. A caller that goes away (client disconnect)
stops waiting; the inference is cancelled (leaving the queue) only when nobody waits any more.
A follower whose leader failed (a 503 for the leader's deadline, say) runs its own inference: one
request's error is never another's answer.

Example::

    flight = flights.get(key)
    if flight is None or not flight.admits(priority):
        flight = flights.start(key, priority, engine.infer(deployment, request, cached=False))
    response = await flight.wait()
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Flight(Generic[T]):
    def __init__(self, task: asyncio.Future[T], priority: int) -> None:
        self.task = task
        self.priority = priority
        self.waiters = 0
        self.joined = 0  # followers, beyond the leader

    def admits(self, priority: int) -> bool:
        """A follower joins only a flight at least as urgent as itself (lower runs first): a gold
        request must not wait on a bronze one's place in the queue."""
        return not self.task.done() and self.priority <= priority

    async def wait(self) -> T:
        self.waiters += 1
        try:
            return await asyncio.shield(self.task)
        except asyncio.CancelledError:
            if self.waiters == 1 and not self.task.done():
                self.task.cancel()  # the last one waiting left: take the request out of the queue
            raise
        finally:
            self.waiters -= 1


class Flights(Generic[T]):
    def __init__(self) -> None:
        self._flights: dict[bytes, Flight[T]] = {}

    def __len__(self) -> int:
        return len(self._flights)

    def get(self, key: bytes) -> Flight[T] | None:
        return self._flights.get(key)

    def start(
        self, key: bytes, priority: int, work: Coroutine[Any, Any, T], landed: Callable[[Flight[T]], None]
    ) -> Flight[T]:
        """Run ``work`` as the flight of ``key``; ``landed(flight)`` runs once it is done, whoever
        still waits for it."""
        flight = Flight(asyncio.ensure_future(work), priority)
        self._flights[key] = flight

        def done(_: asyncio.Future[T]) -> None:
            if self._flights.get(key) is flight:
                del self._flights[key]
            landed(flight)

        flight.task.add_done_callback(done)
        return flight
