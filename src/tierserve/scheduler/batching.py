"""Batch formation over a bounded priority queue.

Items are ordered by ``(priority, deadline, arrival order)``: lower priority values run first, then
earliest deadline, then first come. A batch starts from the head and takes the following items
that share the head's ``batch_key`` (same non-batch shapes) while the rows fit ``max_batch_size``.

The queue never makes a lone request wait for company: with one request queued, or with
``max_queue_delay_s == 0``, a batch is formed from whatever is queued right now. Only when several
requests wait and the batch is not full does it hold the head for up to ``max_queue_delay_s``.

Example::

    q = BatchQueue(max_batch_size=8, max_queue_delay_s=0.0, capacity=100)
    q.push(Pending(payload="a", rows=1, batch_key=(16,), arrival=0.0))
    q.push(Pending(payload="b", rows=1, batch_key=(16,), arrival=0.0))
    batch = q.next_batch(now=0.0)   # Batch with both items, rows == 2
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


class QueueFull(Exception):
    """The queue is at its bound; the caller must reject the request."""


@dataclass(eq=False)
class Pending(Generic[T]):
    """One queued request: its payload plus what the policy needs to order and batch it."""

    payload: T
    rows: int
    batch_key: Hashable
    arrival: float
    priority: int = 0
    deadline: float = math.inf
    seq: int = field(default=-1, init=False)
    cancelled: bool = field(default=False, init=False)

    def sort_key(self) -> tuple[int, float, int]:
        return (self.priority, self.deadline, self.seq)


@dataclass(frozen=True)
class Batch(Generic[T]):
    items: list[Pending[T]]

    @property
    def rows(self) -> int:
        return sum(item.rows for item in self.items)


class BatchQueue(Generic[T]):
    """Bounded priority queue that hands out batches; see the module docstring."""

    def __init__(self, max_batch_size: int, max_queue_delay_s: float, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.max_batch_size = max_batch_size
        self.max_queue_delay_s = max_queue_delay_s
        self.capacity = capacity
        self._heap: list[tuple[tuple[int, float, int], Pending[T]]] = []
        self._live = 0
        self._seq = itertools.count()

    def __len__(self) -> int:
        return self._live

    @property
    def batching(self) -> bool:
        return self.max_batch_size > 0

    def push(self, item: Pending[T]) -> None:
        if self._live >= self.capacity:
            raise QueueFull(f"queue is full ({self.capacity} requests)")
        if self.batching and item.rows > self.max_batch_size:
            raise ValueError(f"{item.rows} rows exceed max_batch_size {self.max_batch_size}")
        item.seq = next(self._seq)
        heapq.heappush(self._heap, (item.sort_key(), item))
        self._live += 1

    def cancel(self, item: Pending[T]) -> bool:
        """Withdraw a queued item; False if it already left the queue (or was cancelled)."""
        if item.cancelled or item.seq < 0 or not self._contains(item):
            return False
        item.cancelled = True
        self._live -= 1
        return True

    def oldest_arrival(self) -> float | None:
        arrivals = [item.arrival for _, item in self._heap if not item.cancelled]
        return min(arrivals) if arrivals else None

    def next_batch(self, now: float) -> Batch[T] | float | None:
        """A batch to run now, the time to ask again (holding for company), or None when empty."""
        head = self._pop_live()
        if head is None:
            return None
        if not self.batching:
            return Batch([head])
        items, skipped = self._collect_compatible(head)
        rows = sum(item.rows for item in items)
        others_waiting = self._live > 0
        release_at = head.arrival + self.max_queue_delay_s
        if rows >= self.max_batch_size or not (others_waiting or len(items) > 1) or now >= release_at:
            self._restore(skipped)
            return Batch(items)
        self._restore(items + skipped)
        return release_at

    # -- internals ---------------------------------------------------------------------------

    def _contains(self, item: Pending[T]) -> bool:
        return any(queued is item for _, queued in self._heap)

    def _pop_live(self) -> Pending[T] | None:
        while self._heap:
            _, item = heapq.heappop(self._heap)
            if not item.cancelled:
                self._live -= 1
                return item
        return None

    def _collect_compatible(self, head: Pending[T]) -> tuple[list[Pending[T]], list[Pending[T]]]:
        """Pop, in order, the items that join ``head``'s batch; return them and the ones passed over."""
        items: list[Pending[T]] = [head]
        skipped: list[Pending[T]] = []
        rows = head.rows
        # Bound the scan so that a queue full of incompatible shapes costs O(batch), not O(queue).
        while rows < self.max_batch_size and len(skipped) < 4 * self.max_batch_size:
            item = self._pop_live()
            if item is None:
                break
            if item.batch_key == head.batch_key and rows + item.rows <= self.max_batch_size:
                items.append(item)
                rows += item.rows
            else:
                skipped.append(item)
        return items, skipped

    def _restore(self, items: list[Pending[T]]) -> None:
        for item in items:
            heapq.heappush(self._heap, (item.sort_key(), item))
            self._live += 1
