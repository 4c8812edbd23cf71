"""Cancel a request's work when its client goes away, so that it leaves the queue."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from starlette.requests import Request

T = TypeVar("T")


class ClientDisconnected(Exception):
    """The client closed the connection before its response was ready."""


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await ``work``; if the client disconnects first, cancel it and raise ClientDisconnected.

    Call only after the body has been read: the watcher consumes ASGI receive messages.
    """
    task = asyncio.current_task()
    assert task is not None
    state = {"finished": False, "disconnected": False}

    async def watch() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass
        if not state["finished"]:
            state["disconnected"] = True
            task.cancel()

    watcher = asyncio.create_task(watch())
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
        watcher.cancel()
