"""One model version on one pool: a bounded priority queue drained by replica threads.

The event loop submits work and awaits a future; replica threads take batches from the queue under
a condition variable, run them on their backend (ONNX Runtime releases the GIL), and hand results
back to the loop with one ``call_soon_threadsafe`` per batch. Every future is resolved exactly once:
results are set only on futures that are not done (a cancelled caller is skipped), and a failure of
the whole batch fails every future in it. Requests that the policy drops (deadline no longer
reachable) or evicts (queue full of lower-priority work) are answered 503 the same way.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import numpy as np

from tierserve.backends.base import Backend
from tierserve.engine.pools import PoolSpec
from tierserve.errors import InferenceFailed, TierserveError, Unavailable
from tierserve.observability.metrics import ModelMetrics
from tierserve.observability.stats import ModelStats
from tierserve.router.breaker import CircuitBreaker
from tierserve.router.policy import PoolOption
from tierserve.scheduler import admission
from tierserve.scheduler.admission import PoolPrice, Ticket
from tierserve.scheduler.batching import Batch, BatchQueue, Pending, QueueFull, Step
from tierserve.scheduler.service_time import ServiceTimeEstimator
from tierserve.scheduler.tiers import Tier

log = logging.getLogger(__name__)

Outputs = dict[str, np.ndarray]


@dataclass(eq=False)
class Work:
    feeds: dict[str, np.ndarray]
    future: asyncio.Future[Outputs]
    loop: asyncio.AbstractEventLoop
    enqueued_ns: int
    tier: Tier


class ModelRunner:
    def __init__(
        self,
        name: str,
        version: int,
        backends: Sequence[Backend],
        *,
        pool: PoolSpec,
        max_batch_size: int,
        max_queue_delay_s: float,
        max_queue_size: int,
        stats: ModelStats,
        metrics: ModelMetrics,
        estimator: ServiceTimeEstimator | None = None,
        aging_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not backends:
            raise ValueError("a runner needs at least one backend")
        self.name = name
        self.version = version
        self.pool = pool
        self.breaker = CircuitBreaker()
        self.backends = list(backends)
        self.signature = backends[0].signature
        self.max_batch_size = max_batch_size
        self.stats = stats
        self.metrics = metrics
        self.price = PoolPrice(
            pool.cost_per_hour, pool.cost_per_1k_requests, pool.rtt_ms / 1000, pool.approximate
        )
        self._clock = clock
        self._queue: BatchQueue[Work] = BatchQueue(
            max_batch_size, max_queue_delay_s, max_queue_size, estimator=estimator, aging_s=aging_s
        )
        self.estimator = self._queue.estimator
        self._busy_until = [-math.inf] * len(self.backends)
        self._cond = threading.Condition()
        self._stopping = False
        self._retired: set[int] = set()
        self._threads: list[threading.Thread] = []
        # What the autoscaler reads and resets every tick.
        self._window_busy_s = 0.0
        self._window_latency: deque[tuple[str, float]] = deque(maxlen=10_000)
        for i in range(len(self.backends)):
            self._start_thread(i)

    def _start_thread(self, replica: int) -> None:
        name = f"{self.name}-v{self.version}-{self.pool.name}-r{replica}"
        thread = threading.Thread(target=self._replica_loop, args=(replica,), name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    @property
    def replicas(self) -> int:
        return len(self.backends) - len(self._retired)

    def resize(self, replicas: int, make_backend: Callable[[], Backend]) -> None:
        """Grow with new backends from ``make_backend``, or retire the newest replicas (each leaves
        once its current batch is done)."""
        while self.replicas < replicas:
            backend = make_backend()
            with self._cond:
                self.backends.append(backend)
                self._busy_until.append(-math.inf)
                index = len(self.backends) - 1
            self._start_thread(index)
        with self._cond:
            live = [i for i in range(len(self.backends)) if i not in self._retired]
            for i in live[replicas:] if replicas >= 1 else live[1:]:
                self._retired.add(i)
            self._cond.notify_all()

    def observe_latency(self, tier: str, seconds: float) -> None:
        self._window_latency.append((tier, seconds))

    def take_window(self) -> tuple[float, list[tuple[str, float]]]:
        """Busy replica-seconds and served latencies since the last call."""
        with self._cond:
            busy, self._window_busy_s = self._window_busy_s, 0.0
        latencies = list(self._window_latency)
        self._window_latency.clear()
        return busy, latencies

    def queue_snapshot(self) -> tuple[dict[int, int], float | None]:
        """Depth per priority and the age in seconds of the oldest queued request."""
        with self._cond:
            oldest = self._queue.oldest_arrival()
            return self._queue.depth_by_priority(), None if oldest is None else self._clock() - oldest

    def cost_per_item(self, rows: int = 1) -> float:
        """What one item costs here (see ``admission.cost_per_item``)."""
        return admission.cost_per_item(self._queue, self.price, rows)

    def option(self, t: Ticket, now: float) -> PoolOption:
        """This pool as the router sees it for ``t`` (see ``admission.option``)."""
        available = self.breaker.allows(now) and self.backends[0].available()
        with self._cond:
            free_at = self._free_at()
            return admission.option(
                self.pool.name,
                self._queue,
                t,
                now,
                free_at,
                self.price,
                replicas=len(free_at),
                available=available,
            )

    def submit(self, feeds: dict[str, np.ndarray], batch_key: Hashable, t: Ticket) -> asyncio.Future[Outputs]:
        """Queue one request, admitted as ``t`` (its deadline fixed at arrival); the future resolves to
        its outputs. Raises Unavailable when the queue is full of work at least as important. Admission
        by deadline is the router's (see Engine.infer)."""
        loop = asyncio.get_running_loop()
        work = Work(feeds, loop.create_future(), loop, time.perf_counter_ns(), t.tier)
        item = admission.pending(t, work, batch_key)
        with self._cond:
            now = self._clock()
            if self._stopping:
                raise Unavailable(f"model '{self.name}' version {self.version} is unloading")
            try:
                evicted = self._queue.push(item, now)
            except QueueFull as exc:
                raise Unavailable(
                    f"model '{self.name}' is overloaded on pool '{self.pool.name}': {exc}", retry_after_s=1.0
                ) from None
            if evicted is not None:
                _fail(
                    evicted.payload,
                    Unavailable(
                        f"evicted from the full queue of '{self.name}' by "
                        f"higher-priority work (tier {evicted.payload.tier.name})"
                    ),
                )
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
        live = [b for i, b in enumerate(self.backends) if i not in self._retired]
        for backend in {id(b): b for b in live}.values():  # replicas may share one client
            backend.close()

    # -- internals -----------------------------------------------------------------------------

    def _free_at(self, but: int | None = None) -> list[float]:
        """When each live replica (other than ``but``) frees up: ``-inf`` when idle. Under the lock."""
        return [t for i, t in enumerate(self._busy_until) if i != but and i not in self._retired]

    def _withdraw(self, item: Pending[Work]) -> None:
        with self._cond:
            if self._queue.cancel(item):
                self.metrics.queue_depth.set(len(self._queue))

    def _replica_loop(self, replica: int) -> None:
        backend = self.backends[replica]
        while True:
            with self._cond:
                while True:
                    if replica in self._retired:
                        self._busy_until[replica] = math.inf  # never free again, for predictions
                        if all(
                            b is not backend for i, b in enumerate(self.backends) if i not in self._retired
                        ):
                            backend.close()
                        return
                    now = self._clock()
                    step = self._queue.next_batch(now, self._free_at(but=replica))
                    for dropped in step.dropped:
                        late_ms = (now + self.estimator.predict(dropped.rows) - dropped.deadline) * 1000
                        why = (
                            f"it would finish {late_ms:.0f} ms past its deadline"
                            if late_ms > 0
                            else "overloaded, and it could only run in a small batch before its deadline"
                        )
                        _fail(
                            dropped.payload,
                            Unavailable(
                                f"tier '{dropped.payload.tier.name}' request dropped from the queue of "
                                f"'{self.name}': {why}"
                            ),
                        )
                    if step.batch is not None:
                        batch = step.batch
                        self._busy_until[replica] = now + self.estimator.predict(batch.rows)
                        if log.isEnabledFor(logging.DEBUG):
                            self._log_batch(replica, step, batch, now)
                        self.metrics.queue_depth.set(len(self._queue))
                        break
                    if self._stopping and len(self._queue) == 0:
                        return
                    timeout = None if step.wake_at is None else max(0.0, step.wake_at - now)
                    self._cond.wait(timeout)
            works, rows = [item.payload for item in batch.items], [i.rows for i in batch.items]
            seconds = self._run(backend, works, rows)
            with self._cond:
                self._busy_until[replica] = -math.inf
                if seconds is not None:
                    self.estimator.observe(batch.rows, seconds)
                    # Capacity used, not time busy: small batches on a lightly loaded replica are not
                    # saturation (see autoscale.policy); a row costs its share of the largest batch.
                    full = max(1, self.max_batch_size)
                    self._window_busy_s += batch.rows * self.estimator.mean(full) / full

    def _log_batch(self, replica: int, step: Step[Work], batch: Batch[Work], now: float) -> None:
        """One line per batch (``--log-level debug``): what the scheduler decided and why. Under the lock."""
        head = batch.items[0]
        others = [t - now for t in self._free_at(but=replica)]
        log.debug(
            "%s v%d %s r%d: batch of %d rows (cap %d, %s); head tier %s waited %.1f ms; predicted %.1f ms; "
            "%d queued; other replicas free in %s ms; %d dropped",
            self.name, self.version, self.pool.name, replica, batch.rows, step.cap, step.limit,
            head.payload.tier.name, (now - head.arrival) * 1000, self.estimator.predict(batch.rows) * 1000,
            len(self._queue), [round(t * 1000, 1) if math.isfinite(t) else "idle" for t in others],
            len(step.dropped),
        )  # fmt: skip

    def _run(self, backend: Backend, works: list[Work], rows: list[int]) -> float | None:
        """Run one batch and resolve its futures; return the backend's run time in seconds."""
        start = time.perf_counter_ns()
        for work in works:
            wait_ns = start - work.enqueued_ns
            self.stats.record_queue(wait_ns)
            self.metrics.queue_seconds.observe(wait_ns / 1e9)
        results: list[Outputs] | BaseException
        seconds = None
        try:
            feeds = _concatenate([work.feeds for work in works]) if len(works) > 1 else works[0].feeds
            inferred = time.perf_counter_ns()
            outputs = backend.run(feeds)
            ran = time.perf_counter_ns()
            results = _split(outputs, rows) if len(works) > 1 else [outputs]
            done = time.perf_counter_ns()
            self.stats.record_batch(sum(rows), len(works), inferred - start, ran - inferred, done - ran)
            seconds = (ran - inferred) / 1e9
            self.metrics.inference_seconds.observe(seconds)
            self.metrics.batch_size.observe(sum(rows))
        except TierserveError as exc:
            results = exc
        except Exception as exc:  # a backend failure must fail the batch's futures, never hang them
            log.exception("batch of %d request(s) failed on %s v%d", len(works), self.name, self.version)
            results = InferenceFailed(f"inference failed for model '{self.name}': {exc}")
        works[0].loop.call_soon_threadsafe(_resolve, works, results)
        return seconds


def _fail(work: Work, error: BaseException) -> None:
    work.loop.call_soon_threadsafe(_resolve, [work], error)


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
