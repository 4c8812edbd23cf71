"""The audit log: admin actions written before they are answered, inference metadata queued.

Inference records must not slow the request: ``record`` appends to a bounded queue that a
background task flushes in batches; when the queue is full the record is dropped and counted
(``tierserve_audit_dropped_total``). Admin actions are rare and must not be lost: ``write``
stores the record before the caller answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter, deque

import prometheus_client
from prometheus_client import CollectorRegistry, Gauge

from tierserve.security.audit_records import AuditRecord
from tierserve.security.store import SecurityStore

log = logging.getLogger(__name__)

FLUSH_BATCH = 1000


class AuditLog:
    def __init__(
        self,
        store: SecurityStore,
        registry: CollectorRegistry,
        *,
        max_queue: int = 10_000,
        flush_interval_s: float = 0.5,
    ) -> None:
        self.store = store
        self.max_queue = max_queue
        self.flush_interval_s = flush_interval_s
        self._queue: deque[AuditRecord] = deque()
        self._wake = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self.written = prometheus_client.Counter(
            "tierserve_audit_records", "Audit records stored, by kind.", ["kind"], registry=registry
        )
        self.dropped = prometheus_client.Counter(
            "tierserve_audit_dropped",
            "Inference audit records dropped: the queue was full or the store failed.",
            registry=registry,
        )
        queued = Gauge("tierserve_audit_queue_depth", "Inference audit records waiting.", registry=registry)
        queued.set_function(lambda: len(self._queue))

    def record(self, record: AuditRecord) -> None:
        """Queue an inference record; never waits."""
        if len(self._queue) >= self.max_queue:
            self.dropped.inc()
            return
        self._queue.append(record)
        if len(self._queue) >= FLUSH_BATCH:
            self._wake.set()

    async def write(self, record: AuditRecord) -> None:
        """Store an admin action now; raises if the store fails (the action is then not answered as done)."""
        await self.store.append([record])
        self.written.labels(record.kind).inc()

    def start(self) -> None:
        self._flusher = asyncio.create_task(self._run(), name="audit-flush")

    async def stop(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None
        await self.flush()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.flush_interval_s)
            self._wake.clear()
            await self.flush()

    async def flush(self) -> None:
        while self._queue:
            batch = [self._queue.popleft() for _ in range(min(FLUSH_BATCH, len(self._queue)))]
            try:
                await self.store.append(batch)
            except Exception:
                log.exception("writing %d audit records failed; they are dropped", len(batch))
                self.dropped.inc(len(batch))
                return
            for kind, count in Counter(record.kind for record in batch).items():
                self.written.labels(kind).inc(count)
