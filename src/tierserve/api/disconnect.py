"""Cancel a request's work when its client goes away, so that it leaves the queue."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from starlette.requests import Request

T = TypeVar("T")

# Work that ends sooner is never watched: a watcher task per request (created, scheduled, cancelled)
# cost about as much event-loop time as the rest of a small model's request. A client that goes
# away is still noticed this long after its request started, while it waits in a queue.
WATCH_AFTER_S = 0.02


class ClientDisconnected(Exception):
    """The client closed the connection before its response was ready."""


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await ``work``; if the client disconnects first, cancel it and raise ClientDisconnected.

    Call only after the body has been read: the watcher consumes ASGI receive messages.
    """
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    state = {"finished": False, "disconnected": False}
    watcher: asyncio.Task[None] | None = None

    async def watch() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass
        if not state["finished"]:
            state["disconnected"] = True
            task.cancel()

    def start_watching() -> None:
        nonlocal watcher
        if not state["finished"]:
            watcher = loop.create_task(watch())

    timer = loop.call_later(WATCH_AFTER_S, start_watching)
    try:
        result = await work
        state["finished"] = True
        return result
    except asyncio.CancelledError:
        if state["disconnected"]:
            task.uncancel()
            raise ClientDisconnected() from None
        raise
    finally:
        state["finished"] = True
        timer.cancel()
        if watcher is not None:
            watcher.cancel()
