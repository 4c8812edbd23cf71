"""One model version in service: a bounded batch queue drained by replica threads.

The event loop submits work and awaits a future; replica threads take batches from the queue under
a condition variable, run them on their backend (ONNX Runtime releases the GIL), and hand results
back to the loop with one ``call_soon_threadsafe`` per batch. Every future is resolved exactly once:
results are set only on futures that are not done (a cancelled caller is skipped), and a failure of
the whole batch fails every future in it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import numpy as np

from tierserve.backends.base import Backend
from tierserve.errors import InferenceFailed, TierserveError, Unavailable
from tierserve.observability.metrics import ModelMetrics
from tierserve.observability.stats import ModelStats
from tierserve.scheduler.batching import Batch, BatchQueue, Pending, QueueFull

log = logging.getLogger(__name__)

Outputs = dict[str, np.ndarray]


@dataclass(eq=False)
class Work:
    feeds: dict[str, np.ndarray]
    future: asyncio.Future[Outputs]
    loop: asyncio.AbstractEventLoop
    enqueued_ns: int


class ModelRunner:
    def __init__(
        self,
        name: str,
        version: int,
        backends: Sequence[Backend],
        *,
        max_batch_size: int,
        max_queue_delay_s: float,
        max_queue_size: int,
        stats: ModelStats,
        metrics: ModelMetrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not backends:
            raise ValueError("a runner needs at least one backend")
        self.name = name
        self.version = version
        self.backends = list(backends)
        self.signature = backends[0].signature
        self.max_batch_size = max_batch_size
        self.stats = stats
        self.metrics = metrics
        self._clock = clock
        self._queue: BatchQueue[Work] = BatchQueue(max_batch_size, max_queue_delay_s, max_queue_size)
        self._cond = threading.Condition()
        self._stopping = False
        self._threads = [
            threading.Thread(
                target=self._replica_loop, args=(backend,), name=f"{name}-v{version}-r{i}", daemon=True
            )
            for i, backend in enumerate(self.backends)
        ]
        for thread in self._threads:
            thread.start()

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    def submit(self, feeds: dict[str, np.ndarray], rows: int, batch_key: Hashable) -> asyncio.Future[Outputs]:
        """Queue one request; the returned future resolves to its outputs. Raises Unavailable when full."""
        loop = asyncio.get_running_loop()
        work = Work(feeds, loop.create_future(), loop, time.perf_counter_ns())
        item = Pending(payload=work, rows=rows, batch_key=batch_key, arrival=self._clock())
        with self._cond:
            if self._stopping:
                raise Unavailable(f"model '{self.name}' version {self.version} is unloading")
            try:
                self._queue.push(item)
            except QueueFull as exc:
                self.metrics.rejected.inc()
                raise Unavailable(f"model '{self.name}' is overloaded: {exc}", retry_after_s=1.0) from None
            self.metrics.queue_depth.set(len(self._queue))
            self._cond.notify()
        work.future.add_done_callback(lambda fut: self._withdraw(item) if fut.cancelled() else None)
        return work.future

    def stop(self, timeout_s: float = 30.0) -> None:
        """Finish what is queued, then stop the replicas and release the backends."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout_s)
        for backend in self.backends:
            backend.close()

    # -- replica threads ---------------------------------------------------------------------

    def _withdraw(self, item: Pending[Work]) -> None:
        with self._cond:
            if self._queue.cancel(item):
                self.metrics.queue_depth.set(len(self._queue))

    def _next_batch(self) -> Batch[Work] | None:
        with self._cond:
            while True:
                decision = self._queue.next_batch(self._clock())
                if isinstance(decision, Batch):
                    self.metrics.queue_depth.set(len(self._queue))
                    return decision
                if decision is None and self._stopping:
                    return None
                timeout = None if decision is None else max(0.0, decision - self._clock())
                self._cond.wait(timeout)

    def _replica_loop(self, backend: Backend) -> None:
        while (batch := self._next_batch()) is not None:
            self._run(backend, [item.payload for item in batch.items], [item.rows for item in batch.items])

    def _run(self, backend: Backend, works: list[Work], rows: list[int]) -> None:
        start = time.perf_counter_ns()
        for work in works:
            wait_ns = start - work.enqueued_ns
            self.stats.record_queue(wait_ns)
            self.metrics.queue_seconds.observe(wait_ns / 1e9)
        results: list[Outputs] | BaseException
        try:
            feeds = _concatenate([work.feeds for work in works]) if len(works) > 1 else works[0].feeds
            inferred = time.perf_counter_ns()
            outputs = backend.run(feeds)
            ran = time.perf_counter_ns()
            results = _split(outputs, rows) if len(works) > 1 else [outputs]
            done = time.perf_counter_ns()
            self.stats.record_batch(sum(rows), len(works), inferred - start, ran - inferred, done - ran)
            self.metrics.inference_seconds.observe((ran - inferred) / 1e9)
            self.metrics.batch_size.observe(sum(rows))
        except TierserveError as exc:
            results = exc
        except Exception as exc:  # a backend failure must fail the batch's futures, never hang them
            log.exception("batch of %d request(s) failed on %s v%d", len(works), self.name, self.version)
            results = InferenceFailed(f"inference failed for model '{self.name}': {exc}")
        works[0].loop.call_soon_threadsafe(_resolve, works, results)


def _resolve(works: list[Work], results: list[Outputs] | BaseException) -> None:
    for i, work in enumerate(works):
        if work.future.done():
            continue
        if isinstance(results, BaseException):
            work.future.set_exception(results)
        else:
            work.future.set_result(results[i])


def _concatenate(feeds: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {name: np.concatenate([f[name] for f in feeds]) for name in feeds[0]}


def _split(outputs: Outputs, rows: list[int]) -> list[Outputs]:
    total = sum(rows)
    offsets = np.cumsum(rows)[:-1]
    parts: list[Outputs] = [{} for _ in rows]
    for name, array in outputs.items():
        if array.ndim == 0 or array.shape[0] != total:
            raise InferenceFailed(
                f"output '{name}' has {array.shape[0] if array.ndim else 0} rows for a batch of {total}"
            )
        for part, piece in zip(parts, np.split(array, offsets), strict=True):
            part[name] = piece
    return parts
