"""Durable async jobs as the API sees them: accept, look up, list, cancel, re-queue, watch.

Example::

    service = JobService.from_settings(settings, engine)
    await service.open()
    service.start(loading)          # workers begin once the models are loaded
    job, created = await service.submit(body, idempotency_key=None)
    ...
    await service.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass

from prometheus_client.core import GaugeMetricFamily, Metric

from tierserve.config import ServerSettings
from tierserve.cursors import parse_cursor
from tierserve.engine.engine import Engine
from tierserve.errors import InvalidInput, NotFound, TierserveError, Unprocessable
from tierserve.jobs.events import JobEvents
from tierserve.jobs.job import Job, JobSummary, Page
from tierserve.jobs.quota import JobQuota
from tierserve.jobs.states import JobStatus, RetryPolicy, conflict
from tierserve.jobs.store import JobStore, open_store
from tierserve.jobs.submission import SubmitDefaults, build_spec
from tierserve.jobs.worker import JobWorkers, WorkerConfig

log = logging.getLogger(__name__)

MAX_PAGE = 1000
SUMMARY_INTERVAL_S = 5.0  # how often jobs are counted for /metrics


@dataclass(frozen=True)
class JobSettings:
    workers: WorkerConfig
    defaults: SubmitDefaults
    watch_poll_s: float = 1.0  # how soon a watcher sees changes made by another server
    keepalive_s: float = 15.0
    max_jobs: int = 0  # unfinished jobs at most (0: no limit); see tierserve.jobs.quota
    max_jobs_per_tenant: int = 0

    @classmethod
    def from_server(cls, settings: ServerSettings) -> JobSettings:
        return cls(
            WorkerConfig(
                concurrency=settings.job_workers,
                visibility_s=settings.job_visibility_timeout_s,
                poll_s=settings.job_poll_interval_s,
                ttl_s=settings.job_result_ttl_s,
                retry=RetryPolicy(settings.job_retry_base_s, settings.job_retry_max_s),
                max_result_bytes=settings.max_job_result_bytes,
            ),
            SubmitDefaults(max_attempts=settings.job_max_attempts),
            watch_poll_s=min(1.0, settings.job_poll_interval_s * 2),
            max_jobs=settings.max_jobs,
            max_jobs_per_tenant=settings.max_jobs_per_tenant,
        )


def job_not_found(job_id: str) -> TierserveError:
    return NotFound(f"unknown job '{job_id}'")


class JobService:
    def __init__(
        self,
        store: JobStore,
        engine: Engine,
        settings: JobSettings,
        *,
        clock: Callable[[], float] = time.time,  # wall clock: stored times outlive this process
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.store = store
        self.engine = engine
        self.settings = settings
        self.events = JobEvents()
        self._clock = clock
        self.workers = JobWorkers(store, engine, self.events, settings.workers, clock=clock, random=rng)
        self._purger: asyncio.Task[None] | None = None
        self._summarizer: asyncio.Task[None] | None = None
        self.quota = JobQuota(max_jobs=settings.max_jobs, max_per_tenant=settings.max_jobs_per_tenant)
        self._quota_counter: asyncio.Task[None] | None = None
        self.summary: JobSummary | None = None  # refreshed every SUMMARY_INTERVAL_S, for metrics

    @classmethod
    def from_settings(cls, settings: ServerSettings, engine: Engine) -> JobService:
        return cls(
            open_store(settings.database, settings.state_dir), engine, JobSettings.from_server(settings)
        )

    # -- lifecycle ---------------------------------------------------------------------------------

    async def open(self) -> None:
        await self.store.open()

    def start(self, ready: Awaitable[object]) -> None:
        self.workers.start(ready)
        self._purger = asyncio.create_task(self._purge_loop(), name="jobs-purge")
        self._summarizer = asyncio.create_task(self._summary_loop(), name="jobs-summary")
        self._quota_counter = asyncio.create_task(self.quota.follow(self.store.unfinished), name="jobs-quota")

    def begin_shutdown(self) -> None:
        """SIGTERM: lease no new jobs and end the event streams, so connections close at once
        instead of holding the graceful shutdown for its whole timeout."""
        self.workers.drain()
        self.events.close()

    async def stop(self) -> None:
        for task in (self._purger, self._summarizer, self._quota_counter):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.workers.stop()
        await self.store.close()

    async def _purge_loop(self) -> None:
        period = min(60.0, max(0.1, self.settings.workers.ttl_s / 2))
        while True:
            try:
                purged = await self.store.purge(self._clock())
                if purged:
                    log.info("purged %d job(s) past their time to live", purged)
            except Exception:
                log.exception("purging expired jobs failed")
            await asyncio.sleep(period)

    async def _summary_loop(self) -> None:
        while True:
            try:
                self.summary = await self.store.summary()
            except Exception:
                log.exception("counting jobs for metrics failed")
            await asyncio.sleep(SUMMARY_INTERVAL_S)

    def metric_families(self) -> Iterable[Metric]:
        """Jobs per status and the oldest queued job's age, as of the last count (scrape time)."""
        jobs = GaugeMetricFamily("tierserve_jobs", "Stored jobs per status.", labels=["status"])
        age = GaugeMetricFamily(
            "tierserve_jobs_oldest_queued_age_seconds",
            "Age of the oldest queued job (0 when none is queued).",
        )
        summary = self.summary
        if summary is None:
            return []
        for status in JobStatus:
            jobs.add_metric([status.value], summary.counts.get(status.value, 0))
        oldest = summary.oldest_queued_at
        age.add_metric([], 0.0 if oldest is None else max(0.0, self._clock() - oldest))
        return [jobs, age]

    # -- operations --------------------------------------------------------------------------------

    async def submit(
        self,
        body: bytes,
        idempotency_key: str | None,
        *,
        tenant: str | None = None,
        default_tier: str | None = None,
    ) -> tuple[Job, bool]:
        """Check and store a job of ``tenant``; durable once this returns. With a known idempotency
        key, the job that key made (and False), provided the request is the same."""
        self.quota.check(tenant)  # full: refused before the body is even parsed
        defaults = self.settings.defaults
        spec = build_spec(
            body, idempotency_key, self.engine, defaults, tenant=tenant, default_tier=default_tier
        )
        job, created = await self.store.submit(spec, self._clock())
        if created:
            self.quota.accepted(tenant)
            self.workers.wake()
        elif job.fingerprint != spec.fingerprint:
            raise Unprocessable(
                f"Idempotency-Key '{idempotency_key}' was used for a different request (job '{job.id}')"
            )
        return job, created

    async def get(self, job_id: str, tenant: str | None = None) -> Job:
        """The job; 404 also when ``tenant`` is given and owns it not (its existence is not told)."""
        job = await self.store.get(job_id)
        if job is None or (tenant is not None and job.tenant != tenant):
            raise job_not_found(job_id)
        return job

    async def list_jobs(
        self,
        *,
        status: str | None,
        model: str | None,
        limit: int,
        cursor: str | None,
        tenant: str | None = None,
    ) -> Page:
        if status is not None and status not in JobStatus.__members__.values():
            raise InvalidInput(f"unknown job status '{status}'; one of {', '.join(JobStatus)}")
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidInput(f"'limit' must be from 1 to {MAX_PAGE}")
        before = parse_cursor(cursor)
        return await self.store.list_jobs(
            status=None if status is None else JobStatus(status),
            model=model,
            limit=limit,
            before=before,
            tenant=tenant,
        )

    async def cancel(self, job_id: str, tenant: str | None = None) -> Job:
        if tenant is not None:
            await self.get(job_id, tenant)  # another tenant's job is a 404, never cancelled
        job, _ = await self.store.cancel(job_id, self._clock(), self.settings.workers.ttl_s)
        if job is None:
            raise job_not_found(job_id)
        if job.status is not JobStatus.CANCELLED:  # cancelling twice is not an error
            raise conflict(job_id, job.status, "cancelled", JobStatus.QUEUED)
        self.events.publish(job_id)
        return job

    async def requeue(self, job_id: str) -> Job:
        """The admin's way out of the dead-letter state: queued again, attempts counted afresh."""
        job, requeued = await self.store.requeue(job_id, self._clock())
        if job is None:
            raise job_not_found(job_id)
        if not requeued:
            raise conflict(job_id, job.status, "re-queued", JobStatus.DEAD)
        self.workers.wake()
        self.events.publish(job_id)
        return job

    async def watch(self, job_id: str) -> AsyncIterator[Job | None]:
        """The job now, then each time its status or attempts change, until it is final (or purged).
        None when nothing changed for ``keepalive_s`` (the stream sends a keep-alive)."""
        last: tuple[JobStatus, int] | None = None
        quiet_since = time.monotonic()
        with self.events.subscribe(job_id) as changed:
            while True:
                changed.clear()
                job = await self.store.get(job_id, with_result=False)
                if job is None:
                    if last is None:
                        raise job_not_found(job_id)
                    return
                if (job.status, job.attempts) != last:
                    last = (job.status, job.attempts)
                    quiet_since = time.monotonic()
                    yield job
                    if job.status.final:
                        return
                elif time.monotonic() - quiet_since >= self.settings.keepalive_s:
                    quiet_since = time.monotonic()
                    yield None
                if self.events.closing:
                    return  # the server is shutting down; a client reconnects to another one
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), self.settings.watch_poll_s)
