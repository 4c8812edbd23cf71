"""Workers against a real SQLite store and a fake engine: what each outcome of an attempt does.

The engine is faked here only to choose outcomes (overload, bad input) at will; the integration
tests run jobs through the real engine.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tierserve.datatypes import from_name
from tierserve.engine.request import InferRequest, InferResponse, OutputTensor
from tierserve.errors import InvalidInput, ModelNotFound, TierserveError, Unavailable
from tierserve.jobs.events import JobEvents
from tierserve.jobs.job import Job, JobSpec
from tierserve.jobs.sqlite import SqliteJobStore
from tierserve.jobs.states import JobStatus, RetryPolicy
from tierserve.jobs.worker import JobWorkers, WorkerConfig

pytestmark = pytest.mark.anyio

# Asks for binary outputs: results are stored as JSON all the same.
BODY = orjson.dumps(
    {
        "id": "r1",
        "parameters": {"binary_data_output": True},
        "inputs": [{"name": "X", "datatype": "FP32", "shape": [1], "data": [2.0]}],
    }
)


class FakeEngine:
    """``deployment`` and ``infer`` as the worker uses them; ``outcomes`` are raised in turn (None:
    succeed)."""

    def __init__(self, *outcomes: TierserveError | None, hold: asyncio.Event | None = None) -> None:
        self.outcomes = list(outcomes)
        self.hold = hold
        self.tiers: list[str] = []
        self.running = 0
        self.most_running = 0
        self.started = asyncio.Event()
        self.cancelled = asyncio.Event()

    def deployment(self, name: str, version: str | None = None) -> str:
        if name == "missing":
            raise ModelNotFound(name)
        return name

    async def infer(self, deployment: str, request: InferRequest, *, pinned: bool = True) -> InferResponse:
        self.tiers.append(request.parameters["tier"])
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        self.started.set()
        try:
            if self.hold is not None:
                try:
                    await self.hold.wait()
                except asyncio.CancelledError:
                    self.cancelled.set()
                    raise
            outcome = self.outcomes.pop(0) if self.outcomes else None
            if outcome is not None:
                raise outcome
            doubled = request.inputs[0].array * 2
            output = OutputTensor("Y", from_name("FP32"), doubled, binary=request.binary_output)
            return InferResponse(deployment, "1", [output], id=request.id)
        finally:
            self.running -= 1


def config(**overrides: Any) -> WorkerConfig:
    values: dict[str, Any] = {
        "concurrency": 4,
        "visibility_s": 5.0,
        "poll_s": 0.02,
        "ttl_s": 3600.0,
        "retry": RetryPolicy(base_s=0.01, max_s=0.05),
        "shutdown_grace_s": 0.05,
    }
    values.update(overrides)
    return WorkerConfig(**values)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteJobStore]:
    opened = SqliteJobStore(tmp_path / "jobs.db")
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


async def submit(
    store: SqliteJobStore, model: str = "m", max_attempts: int = 3, tier: str = "gold", ago: float = 0.0
) -> str:
    job, _ = await store.submit(
        JobSpec(str(uuid.uuid4()), model, None, tier, max_attempts, BODY), time.time() - ago
    )
    return job.id


async def settle(store: SqliteJobStore, job_id: str, limit_s: float = 5.0) -> Job:
    deadline = time.monotonic() + limit_s
    while True:
        job = await store.get(job_id)
        assert job is not None
        if job.status.final:
            return job
        assert time.monotonic() < deadline, f"job still {job.status} after {limit_s} s"
        await asyncio.sleep(0.01)


def workers(store: SqliteJobStore, engine: FakeEngine, **overrides: Any) -> JobWorkers:
    ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    ready.set_result(None)
    pool = JobWorkers(store, engine, JobEvents(), config(**overrides), clock=time.time, random=lambda: 0.5)  # type: ignore[arg-type]
    pool.start(ready)
    return pool


async def test_a_job_runs_at_its_tier_and_its_result_is_stored_as_json(store: SqliteJobStore) -> None:
    engine = FakeEngine()
    pool = workers(store, engine)
    try:
        job = await settle(store, await submit(store, tier="silver"))
    finally:
        await pool.stop()
    assert (job.status, job.attempts) == (JobStatus.SUCCEEDED, 1)
    assert engine.tiers == ["silver"]
    assert job.result is not None
    result = orjson.loads(job.result)
    assert result["id"] == "r1" and result["model_name"] == "m"
    assert result["outputs"] == [{"name": "Y", "datatype": "FP32", "shape": [1], "data": [4.0]}]


async def test_overload_is_retried_with_backoff_until_it_passes(store: SqliteJobStore) -> None:
    engine = FakeEngine(Unavailable("busy", retry_after_s=0.0), Unavailable("still busy", retry_after_s=0.0))
    pool = workers(store, engine)
    try:
        job = await settle(store, await submit(store))
    finally:
        await pool.stop()
    assert (job.status, job.attempts, job.last_error) == (JobStatus.SUCCEEDED, 3, "still busy")


async def test_a_job_that_keeps_failing_becomes_a_dead_letter(store: SqliteJobStore) -> None:
    engine = FakeEngine(*[Unavailable("busy", retry_after_s=0.0)] * 5)
    pool = workers(store, engine)
    try:
        job = await settle(store, await submit(store, max_attempts=2))
    finally:
        await pool.stop()
    assert (job.status, job.attempts) == (JobStatus.DEAD, 2)
    assert job.last_error is not None and job.last_error.startswith("busy")
    assert job.expires_at is not None


async def test_a_model_that_is_not_loaded_is_retried(store: SqliteJobStore) -> None:
    pool = workers(store, FakeEngine())
    try:
        job = await settle(store, await submit(store, model="missing", max_attempts=2))
    finally:
        await pool.stop()
    assert (job.status, job.attempts) == (JobStatus.DEAD, 2)
    assert job.last_error is not None and "unknown model" in job.last_error


async def test_bad_input_fails_the_job_without_retrying(store: SqliteJobStore) -> None:
    pool = workers(store, FakeEngine(InvalidInput("shape mismatch")))
    try:
        job = await settle(store, await submit(store))
    finally:
        await pool.stop()
    assert (job.status, job.attempts, job.last_error) == (JobStatus.FAILED, 1, "shape mismatch")


async def test_no_more_jobs_run_at_once_than_the_concurrency(store: SqliteJobStore) -> None:
    hold = asyncio.Event()
    engine = FakeEngine(hold=hold)
    pool = workers(store, engine, concurrency=2)
    try:
        ids = [await submit(store) for _ in range(6)]
        deadline = time.monotonic() + 30
        while engine.running < 2:  # polled with a generous deadline, not a fixed sleep
            assert time.monotonic() < deadline, f"only {engine.running} jobs started"
            await asyncio.sleep(0.01)
        for _ in range(3):  # with both slots taken, more wake-ups and turns of the loop start nothing
            pool.wake()
            for _ in range(20):
                await asyncio.sleep(0)
        assert engine.running == 2
        assert (await store.summary()).counts == {"running": 2, "queued": 4}
        hold.set()
        jobs = [await settle(store, job_id) for job_id in ids]
    finally:
        await pool.stop()
    assert engine.most_running == 2
    assert all(job.status is JobStatus.SUCCEEDED for job in jobs)


async def test_stopping_gives_unfinished_jobs_back_without_counting_the_attempt(
    store: SqliteJobStore,
) -> None:
    engine = FakeEngine(hold=asyncio.Event())  # never released
    pool = workers(store, engine)
    job_id = await submit(store)
    async with asyncio.timeout(5):
        await engine.started.wait()
    await pool.stop()
    job = await store.get(job_id)
    assert job is not None and (job.status, job.attempts) == (JobStatus.QUEUED, 0)


async def test_a_job_whose_workers_kept_dying_is_dead_without_running_again(store: SqliteJobStore) -> None:
    job_id = await submit(store, max_attempts=1, ago=20.0)
    (lease,) = await store.lease("a-worker-that-dies", 1, time.time() - 10, visibility_s=1.0)
    assert lease.job.run_at < time.time()  # its lease has expired already
    engine = FakeEngine()
    pool = workers(store, engine)
    try:
        job = await settle(store, job_id)
    finally:
        await pool.stop()
    assert job.status is JobStatus.DEAD and engine.tiers == []
    assert job.last_error is not None and "lease expired" in job.last_error


async def test_a_lost_lease_stops_the_job_here(store: SqliteJobStore) -> None:
    engine = FakeEngine(hold=asyncio.Event())
    pool = workers(store, engine, visibility_s=0.3)
    try:
        job_id = await submit(store)
        async with asyncio.timeout(5):
            await engine.started.wait()
        # Another worker takes the job over (as if this one had stalled past its lease).
        (taken,) = await store.lease("other", 1, time.time() + 10, visibility_s=60.0)
        assert taken.job.id == job_id
        async with asyncio.timeout(5):  # the next heartbeat finds the lease gone and cancels the run
            await engine.cancelled.wait()
    finally:
        await pool.stop()
    job = await store.get(job_id)
    assert job is not None and job.status is JobStatus.RUNNING and job.lease_token == taken.token


async def test_an_attempt_past_its_time_limit_fails_as_timed_out_and_follows_the_retry_rules(
    store: SqliteJobStore,
) -> None:
    engine = FakeEngine(hold=asyncio.Event())  # never finishes on its own
    pool = workers(store, engine)
    try:
        spec = JobSpec(str(uuid.uuid4()), "m", None, "gold", 2, BODY, time_limit_s=0.05)
        job, _ = await store.submit(spec, time.time())
        job = await settle(store, job.id)
    finally:
        await pool.stop()
    assert (job.status, job.attempts) == (JobStatus.DEAD, 2)  # retried once, then a dead letter
    assert job.last_error is not None and "time limit of 0.05 s" in job.last_error
    assert engine.cancelled.is_set()  # the request of a timed-out attempt is cancelled


async def test_a_gold_job_submitted_after_many_bronze_ones_runs_first(store: SqliteJobStore) -> None:
    for i in range(30):
        await store.submit(JobSpec(f"bronze-{i}", "m", None, "bronze", 1, BODY, priority=2), time.time())
    await store.submit(JobSpec("gold", "m", None, "gold", 1, BODY, priority=0), time.time())
    engine = FakeEngine()
    pool = workers(store, engine, concurrency=1)
    try:
        await settle(store, "bronze-29")
    finally:
        await pool.stop()
    assert engine.tiers[0] == "gold" and engine.tiers.count("bronze") == 30
