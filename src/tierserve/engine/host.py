"""This host's cores, shared by the replicas of every local pool.

Two local pools (fp32 and int8, say) on the same two cores are not independent capacity: without a
gate their replica threads time-slice the cores, every batch runs slower than its estimate, the
router's predictions are wrong, gold misses, and each pool is charged for replica time the other
took. With it, a batch runs only once it holds as many cores as its replica has threads, at the
speed it was profiled at, and when cores free up the waiting batch of the best tier (lowest
priority number) gets them first: a gold batch on the fp32 pool waits at most for batches already
running, never for int8 bronze work queued after it. A pool's cost then counts the core time its
batches really took, and a pool's predictions (``earliest_free``) count the cores the others hold.
"""

from __future__ import annotations

import heapq
import itertools
import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class HostCores:
    def __init__(self, cores: int) -> None:
        self.cores = max(1, cores)
        self._free = self.cores
        self._cond = threading.Condition()
        self._waiting: list[tuple[int, int]] = []  # (priority, arrival order)
        self._order = itertools.count()
        self._ends: dict[int, float] = {}  # holder -> when its batch is expected to end

    @contextmanager
    def hold(self, cores: int, priority: int, until: float = math.inf) -> Iterator[None]:
        """Run the ``with`` body on ``cores`` of this host's cores (capped at all of them); ``until``:
        when the batch is expected to end, on the caller's clock (for ``earliest_free``)."""
        need = min(max(1, cores), self.cores)
        me = (priority, next(self._order))
        with self._cond:
            heapq.heappush(self._waiting, me)
            while self._waiting[0] != me or self._free < need:
                self._cond.wait()
            heapq.heappop(self._waiting)
            self._free -= need
            self._ends[me[1]] = until
            self._cond.notify_all()  # the next in line may fit in what is left
        try:
            yield
        finally:
            with self._cond:
                self._free += need
                self._ends.pop(me[1], None)
                self._cond.notify_all()

    def earliest_free(self) -> float:
        """When a core is expected to be free: ``-inf`` if one is now, else the earliest expected end
        of the batches holding them."""
        with self._cond:
            if self._free > 0:
                return -math.inf
            return min(self._ends.values(), default=-math.inf)

    @property
    def free(self) -> int:
        with self._cond:
            return self._free
