"""Workers: lease due jobs and run each through the engine exactly as online traffic at its tier.

One dispatcher keeps up to ``concurrency`` jobs in flight. It leases when a slot is free, and
sleeps until a job finishes, this server accepts a job, or the poll interval passes (another server
sharing the database may have accepted one). A heartbeat extends the leases of running jobs every
third of the visibility timeout; a job whose lease another worker took over is cancelled here. The
outcome of each attempt goes through ``tierserve.jobs.states`` (retry, dead letter, failure).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from tierserve.engine.engine import Engine
from tierserve.errors import InvalidInput, TierserveError, Unavailable
from tierserve.jobs.events import JobEvents
from tierserve.jobs.job import Lease
from tierserve.jobs.states import Decision, Failure, JobStatus, RetryPolicy, after_failure, on_lease
from tierserve.jobs.store import JobStore
from tierserve.protocol.codec import decode_request, encode_response
from tierserve.rollout.split import RouteKeys

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerConfig:
    concurrency: int
    visibility_s: float
    poll_s: float
    ttl_s: float
    retry: RetryPolicy
    shutdown_grace_s: float = 5.0
    max_result_bytes: int = 0  # a larger result fails the job (it would be stored for ttl_s); 0: any


class JobWorkers:
    def __init__(
        self,
        store: JobStore,
        engine: Engine,
        events: JobEvents,
        config: WorkerConfig,
        *,
        clock: Callable[[], float],
        random: Callable[[], float],
    ) -> None:
        self.store = store
        self.engine = engine
        self.events = events
        self.config = config
        self.owner = f"worker-{uuid.uuid4().hex[:12]}"
        self._clock = clock
        self._random = random
        self._running: dict[str, tuple[Lease, asyncio.Task[None]]] = {}
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    def start(self, ready: Awaitable[object]) -> None:
        """Start leasing once ``ready`` (the engine's model loading) is done."""
        if self.config.concurrency <= 0:
            return
        self._tasks = [
            asyncio.create_task(self._dispatch(ready), name="jobs-dispatch"),
            asyncio.create_task(self._heartbeat(), name="jobs-heartbeat"),
        ]

    def wake(self) -> None:
        """A job may be due now (this server just accepted one)."""
        self._wake.set()

    def drain(self) -> None:
        """Lease nothing more (the server is shutting down); running jobs go on until ``stop``."""
        self._stopping = True
        self._wake.set()

    async def stop(self) -> None:
        """Lease nothing more; let running jobs finish within the grace period; give back the rest."""
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        running = [task for _, task in self._running.values()]
        if running:
            await asyncio.wait(running, timeout=self.config.shutdown_grace_s)
        leftover = list(self._running.values())
        for _, task in leftover:
            task.cancel()
        await asyncio.gather(*(task for _, task in leftover), return_exceptions=True)
        if leftover:
            leases = [lease for lease, _ in leftover]
            try:
                await self.store.release(leases, self._clock())
            except Exception:  # their leases expire instead; another worker runs them then
                log.exception("could not give back %d leased job(s)", len(leases))
            log.info("gave back %d unfinished job(s)", len(leases))

    # -- loops -------------------------------------------------------------------------------------

    async def _dispatch(self, ready: Awaitable[object]) -> None:
        with contextlib.suppress(Exception):  # a failed load leaves some models; serve the rest
            await ready
        while not self._stopping:
            free = self.config.concurrency - len(self._running)
            leased: list[Lease] = []
            if free > 0:
                try:
                    leased = await self.store.lease(self.owner, free, self._clock(), self.config.visibility_s)
                except Exception:
                    log.exception("leasing jobs failed; trying again in %.1f s", self.config.poll_s)
            for lease in leased:
                task = asyncio.create_task(self._attempt(lease), name=f"job-{lease.job.id}")
                self._running[lease.job.id] = (lease, task)
                task.add_done_callback(self._done)
            if free > 0 and len(leased) == free:
                continue  # there may be more due: fill the free slots first
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.config.poll_s)

    def _done(self, task: asyncio.Task[None]) -> None:
        job_id = task.get_name().removeprefix("job-")
        self._running.pop(job_id, None)
        self._wake.set()

    async def _heartbeat(self) -> None:
        period = self.config.visibility_s / 3
        while True:
            await asyncio.sleep(period)
            leases = [lease for lease, _ in self._running.values()]
            if not leases:
                continue
            try:
                held = await self.store.heartbeat(leases, self._clock() + self.config.visibility_s)
            except Exception:
                log.exception("extending %d job lease(s) failed", len(leases))
                continue
            for lease in leases:
                entry = self._running.get(lease.job.id)
                if lease.job.id not in held and entry is not None and entry[0] is lease:
                    log.warning("lost the lease of job %s; stopping it here", lease.job.id)
                    entry[1].cancel()

    # -- one attempt -------------------------------------------------------------------------------

    async def _attempt(self, lease: Lease) -> None:
        job = lease.job
        self.events.publish(job.id)  # it is running now
        result: bytes | None = None
        decision = on_lease(job.attempts, job.max_attempts)
        if decision is None:
            try:
                result = await asyncio.wait_for(self._infer(lease), job.time_limit_s)
                decision = Decision(JobStatus.SUCCEEDED)
            except TimeoutError:  # its request was cancelled: withdrawn from the queue if still there
                limit = f"time limit of {job.time_limit_s:g} s"
                decision = self._after(
                    lease, Failure(f"attempt timed out: it ran past its {limit}", retryable=True)
                )
            except TierserveError as exc:
                decision = self._after(lease, _failure(exc))
            except Exception as exc:
                log.exception("job %s failed unexpectedly", job.id)
                decision = self._after(lease, Failure(f"{type(exc).__name__}: {exc}", retryable=True))
        try:
            if not await self.store.finish(lease, decision, self._clock(), self.config.ttl_s, result):
                log.warning("job %s: lease lost before its outcome (%s) was stored", job.id, decision.status)
        except Exception:  # the lease expires and the job runs again: at least once
            log.exception("job %s: storing its outcome (%s) failed", job.id, decision.status)
        self.events.publish(job.id)

    async def _infer(self, lease: Lease) -> bytes:

        job = lease.job
        assert job.body is not None
        deployment = self.engine.deployment(job.model, job.version)
        request = decode_request(job.body, None)
        request.parameters["tier"] = job.tier
        request.tenant = job.tenant or ""  # a job's cached answers stay its tenant's, as on the hot path
        request.binary_output = False  # results are stored as JSON
        for output in request.outputs or ():
            output.binary = False
        request.routing = RouteKeys(request_id=job.id, tenant=job.tenant)  # a rollout splits jobs too
        response = await self.engine.infer(deployment, request, pinned=job.version is not None)
        content, _ = encode_response(response)
        limit = self.config.max_result_bytes
        if limit and len(content) > limit:
            raise InvalidInput(
                f"the result is {len(content)} bytes, over the limit of {limit} bytes a job may store "
                "(max_job_result_bytes); ask for fewer outputs or split the job"
            )
        return content

    def _after(self, lease: Lease, failure: Failure) -> Decision:
        job = lease.job
        decision = after_failure(
            job.attempts, job.max_attempts, failure, self.config.retry, self._clock(), self._random
        )
        log.info("job %s attempt %d: %s -> %s", job.id, job.attempts, failure.message, decision.status)
        return decision


def _failure(exc: TierserveError) -> Failure:
    """Which errors are worth another attempt: a bad request never is; overload, a model that is
    not loaded here (yet), or a backend failure may pass."""
    if isinstance(exc, InvalidInput):
        return Failure(exc.message, retryable=False)
    if isinstance(exc, Unavailable):
        return Failure(exc.message, retryable=True, retry_after_s=exc.retry_after_s)
    return Failure(exc.message, retryable=True)
