"""Group commit: requests that arrive while a write is in flight share the next one.

Under load, one transaction (one WAL write, one disk flush on PostgreSQL, one hand-off to the
database thread) stores many jobs; alone, a job is written at once with no added wait. Every
caller's future is resolved exactly once, with its own result or error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

Flush = Callable[[Sequence[Item]], Awaitable[Sequence[Result | BaseException]]]


class GroupCommit(Generic[Item, Result]):
    def __init__(self, flush: Flush[Item, Result], *, max_batch: int = 256) -> None:
        self._flush = flush
        self._max_batch = max_batch
        self._pending: list[tuple[Item, asyncio.Future[Result]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def submit(self, item: Item) -> Result:
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._writer is None:
            self._writer = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                try:
                    results = await self._flush([item for item, _ in batch])
                    if len(results) != len(batch):
                        raise RuntimeError(f"{len(results)} results for a batch of {len(batch)}")
                except Exception as exc:
                    results = [exc] * len(batch)
                except BaseException:  # cancelled (shutdown): nobody gets an answer, nobody hangs
                    for _, future in [*batch, *self._pending]:
                        future.cancel()
                    self._pending.clear()
                    raise
                _settle_all(batch, results)
        finally:
            self._writer = None


def _settle_all(
    batch: Sequence[tuple[object, asyncio.Future[Result]]], results: Sequence[Result | BaseException]
) -> None:
    for (_, future), result in zip(batch, results, strict=True):
        _settle(future, result)


def _settle(future: asyncio.Future[Result], result: Result | BaseException) -> None:
    if future.done():  # the caller was cancelled; nobody waits for this one
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)
