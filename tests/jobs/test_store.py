"""The job store contract, run against SQLite and a real PostgreSQL (see conftest.py)."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from jobs.conftest import StoreFactory
from tierserve.jobs.job import JobSpec, Lease
from tierserve.jobs.states import Decision, JobStatus
from tierserve.jobs.store import JobStore

pytestmark = pytest.mark.anyio

T0 = 1_700_000_000.0
VISIBILITY = 30.0
TTL = 3600.0


def spec(
    model: str = "simple", key: str | None = None, body: bytes = b'{"inputs": []}', **kw: object
) -> JobSpec:
    values: dict[str, object] = {
        "id": str(uuid.uuid4()),
        "model": model,
        "version": None,
        "tier": "bronze",
        "max_attempts": 3,
        "body": body,
        "idempotency_key": key,
        "fingerprint": "" if key is None else f"fp-{body!r}",
    }
    values.update(kw)
    return JobSpec(**values)  # type: ignore[arg-type]


async def submit(store: JobStore, count: int = 1, now: float = T0, **kw: object) -> list[str]:
    ids = []
    for _ in range(count):
        job, created = await store.submit(spec(**kw), now)
        assert created
        ids.append(job.id)
    return ids


async def test_a_submitted_job_is_queued_and_can_be_read_back(store: JobStore) -> None:
    job, created = await store.submit(spec(version="2", tier="gold", max_attempts=5), T0)
    assert created
    assert (job.status, job.attempts, job.max_attempts) == (JobStatus.QUEUED, 0, 5)
    read = await store.get(job.id)
    assert read is not None
    assert (read.model, read.version, read.tier) == ("simple", "2", "gold")
    assert read.created_at == read.updated_at == read.run_at == pytest.approx(T0)
    assert read.started_at is None and read.finished_at is None and read.result is None
    assert await store.get("no-such-job") is None


async def test_the_same_idempotency_key_returns_the_same_job(store: JobStore) -> None:
    first, created = await store.submit(spec(key="k-1"), T0)
    again, created_again = await store.submit(spec(key="k-1"), T0 + 1)
    other, created_other = await store.submit(spec(key="k-2"), T0 + 2)
    assert created and not created_again and created_other
    assert again.id == first.id and again.fingerprint == first.fingerprint
    assert other.id != first.id


async def test_concurrent_submits_with_one_key_make_one_job(store: JobStore) -> None:
    results = await asyncio.gather(*(store.submit(spec(key="same"), T0) for _ in range(20)))
    assert len({job.id for job, _ in results}) == 1
    assert sum(created for _, created in results) == 1


async def test_listing_is_newest_first_paginated_and_filtered(store: JobStore) -> None:
    a = await submit(store, 3, model="a")
    b = await submit(store, 2, model="b")
    page = await store.list_jobs(status=None, model=None, limit=2, before=None)
    assert [j.id for j in page.jobs] == [b[1], b[0]]
    assert page.next_cursor is not None
    page2 = await store.list_jobs(status=None, model=None, limit=2, before=page.next_cursor)
    assert [j.id for j in page2.jobs] == [a[2], a[1]]
    page3 = await store.list_jobs(status=None, model=None, limit=2, before=page2.next_cursor)
    assert [j.id for j in page3.jobs] == [a[0]] and page3.next_cursor is None
    only_a = await store.list_jobs(status=None, model="a", limit=10, before=None)
    assert [j.id for j in only_a.jobs] == a[::-1]
    assert all(j.body is None and j.result is None for j in only_a.jobs)
    await store.cancel(a[0], T0, TTL)
    cancelled = await store.list_jobs(status=JobStatus.CANCELLED, model=None, limit=10, before=None)
    assert [j.id for j in cancelled.jobs] == [a[0]]


async def test_a_lease_takes_due_jobs_in_order_up_to_the_limit(store: JobStore) -> None:
    ids = await submit(store, 3)
    later, _ = await store.submit(spec(), T0 + 20)  # run_at in the future of the lease below
    leases = await store.lease("w1", 10, T0 + 1, VISIBILITY)
    assert sorted(lease.job.id for lease in leases) == sorted(ids)
    for lease in leases:
        assert lease.job.status is JobStatus.RUNNING and lease.job.attempts == 1
        assert lease.job.body == b'{"inputs": []}'
        assert lease.job.run_at == pytest.approx(T0 + 1 + VISIBILITY)
        assert lease.job.started_at == pytest.approx(T0 + 1)
    assert await store.lease("w2", 10, T0 + 2, VISIBILITY) == []  # held, and `later` is not due
    assert [x.job.id for x in await store.lease("w2", 10, T0 + 20, VISIBILITY)] == [later.id]


async def test_due_jobs_are_leased_by_tier_priority_then_age(store: JobStore) -> None:
    bronze = [(await store.submit(spec(priority=2), T0 + i))[0].id for i in range(150)]
    gold, _ = await store.submit(spec(tier="gold", priority=0, time_limit_s=2.5), T0 + 200)
    silver, _ = await store.submit(spec(tier="silver", priority=1), T0 + 201)
    first = await store.lease("w1", 3, T0 + 300, VISIBILITY)
    assert [x.job.id for x in first] == [gold.id, silver.id, bronze[0]]
    assert first[0].job.priority == 0 and first[0].job.time_limit_s == 2.5
    assert first[2].job.priority == 2 and first[2].job.time_limit_s is None
    rest = await store.lease("w1", 200, T0 + 300, VISIBILITY)
    assert [x.job.id for x in rest] == bronze[1:]  # oldest first within a tier


async def test_a_lease_respects_the_limit(store: JobStore) -> None:
    await submit(store, 5)
    first = await store.lease("w1", 2, T0, VISIBILITY)
    second = await store.lease("w1", 10, T0, VISIBILITY)
    assert len(first) == 2 and len(second) == 3
    assert not {x.job.id for x in first} & {x.job.id for x in second}


async def test_an_expired_lease_is_taken_over_and_the_old_holder_can_no_longer_finish(
    store: JobStore,
) -> None:
    (job_id,) = await submit(store)
    (old,) = await store.lease("dead-worker", 1, T0, VISIBILITY)
    assert await store.lease("w2", 1, T0 + VISIBILITY - 1, VISIBILITY) == []
    (new,) = await store.lease("w2", 1, T0 + VISIBILITY + 1, VISIBILITY)
    assert new.job.id == job_id and new.job.attempts == 2 and new.token != old.token
    assert new.job.started_at == pytest.approx(T0)  # the first start is kept
    assert not await store.finish(old, Decision(JobStatus.SUCCEEDED), T0 + 40, TTL, b"{}")
    assert (await store.heartbeat([old], T0 + 100)) == set()
    assert await store.finish(new, Decision(JobStatus.SUCCEEDED), T0 + 41, TTL, b'{"ok": 1}')
    done = await store.get(job_id)
    assert done is not None and done.status is JobStatus.SUCCEEDED and done.result == b'{"ok": 1}'


async def test_a_heartbeat_extends_the_lease(store: JobStore) -> None:
    await submit(store)
    (lease,) = await store.lease("w1", 1, T0, VISIBILITY)
    assert await store.heartbeat([lease], T0 + 100) == {lease.job.id}
    assert await store.lease("w2", 1, T0 + VISIBILITY + 1, VISIBILITY) == []
    assert len(await store.lease("w2", 1, T0 + 101, VISIBILITY)) == 1


async def test_finishing_stores_the_result_and_starts_the_time_to_live(store: JobStore) -> None:
    (job_id,) = await submit(store)
    (lease,) = await store.lease("w1", 1, T0, VISIBILITY)
    assert await store.finish(lease, Decision(JobStatus.SUCCEEDED), T0 + 5, TTL, b'{"outputs": []}')
    job = await store.get(job_id)
    assert job is not None
    assert job.status is JobStatus.SUCCEEDED and job.result == b'{"outputs": []}'
    assert job.finished_at == pytest.approx(T0 + 5) and job.expires_at == pytest.approx(T0 + 5 + TTL)
    assert job.lease_token is None
    summary = await store.get(job_id, with_result=False)
    assert summary is not None and summary.result is None


async def test_a_retry_decision_queues_the_job_until_its_backoff_passes(store: JobStore) -> None:
    (job_id,) = await submit(store)
    (lease,) = await store.lease("w1", 1, T0, VISIBILITY)
    retry = Decision(JobStatus.QUEUED, run_at=T0 + 10, error="overloaded")
    assert await store.finish(lease, retry, T0 + 1, TTL)
    job = await store.get(job_id)
    assert job is not None
    assert (job.status, job.attempts, job.last_error) == (JobStatus.QUEUED, 1, "overloaded")
    assert job.finished_at is None and job.expires_at is None
    assert await store.lease("w1", 1, T0 + 9, VISIBILITY) == []
    (again,) = await store.lease("w1", 1, T0 + 10, VISIBILITY)
    assert again.job.attempts == 2
    assert await store.finish(again, Decision(JobStatus.SUCCEEDED), T0 + 11, TTL, b"{}")
    done = await store.get(job_id)
    assert done is not None and done.last_error == "overloaded"  # the last error is kept


async def test_dead_and_failed_jobs_keep_their_error(store: JobStore) -> None:
    dead_id, failed_id = await submit(store, 2)
    leases = {x.job.id: x for x in await store.lease("w1", 2, T0, VISIBILITY)}
    await store.finish(leases[dead_id], Decision(JobStatus.DEAD, error="gave up"), T0 + 1, TTL)
    await store.finish(leases[failed_id], Decision(JobStatus.FAILED, error="bad input"), T0 + 1, TTL)
    dead, failed = await store.get(dead_id), await store.get(failed_id)
    assert dead is not None and (dead.status, dead.last_error) == (JobStatus.DEAD, "gave up")
    assert failed is not None and (failed.status, failed.last_error) == (JobStatus.FAILED, "bad input")
    dead_letters = await store.list_jobs(status=JobStatus.DEAD, model=None, limit=10, before=None)
    assert [j.id for j in dead_letters.jobs] == [dead_id]


async def test_only_queued_jobs_can_be_cancelled(store: JobStore) -> None:
    (running,) = await submit(store)
    await store.lease("w1", 1, T0, VISIBILITY)
    (queued,) = await submit(store)
    job, changed = await store.cancel(queued, T0 + 1, TTL)
    assert changed and job is not None and job.status is JobStatus.CANCELLED
    assert job.expires_at == pytest.approx(T0 + 1 + TTL)
    again, changed_again = await store.cancel(queued, T0 + 2, TTL)
    assert not changed_again and again is not None and again.status is JobStatus.CANCELLED
    held, changed_held = await store.cancel(running, T0 + 2, TTL)
    assert not changed_held and held is not None and held.status is JobStatus.RUNNING
    assert await store.cancel("no-such-job", T0, TTL) == (None, False)
    assert await store.lease("w2", 10, T0 + 3, VISIBILITY) == []  # a cancelled job never runs


async def test_a_dead_job_can_be_requeued_with_fresh_attempts(store: JobStore) -> None:
    (job_id,) = await submit(store)
    (lease,) = await store.lease("w1", 1, T0, VISIBILITY)
    assert await store.requeue(job_id, T0) == ((await store.get(job_id, with_result=False)), False)
    await store.finish(lease, Decision(JobStatus.DEAD, error="gave up"), T0 + 1, TTL)
    job, changed = await store.requeue(job_id, T0 + 2)
    assert changed and job is not None
    assert (job.status, job.attempts, job.expires_at, job.finished_at) == (JobStatus.QUEUED, 0, None, None)
    (again,) = await store.lease("w1", 1, T0 + 2, VISIBILITY)
    assert again.job.attempts == 1
    assert await store.requeue("no-such-job", T0) == (None, False)


async def test_release_gives_jobs_back_without_counting_the_attempt(store: JobStore) -> None:
    ids = await submit(store, 2)
    leases = await store.lease("w1", 2, T0, VISIBILITY)
    await store.release(leases, T0 + 1)
    for job_id in ids:
        job = await store.get(job_id)
        assert job is not None and (job.status, job.attempts) == (JobStatus.QUEUED, 0)
    assert len(await store.lease("w2", 2, T0 + 1, VISIBILITY)) == 2


async def test_purge_deletes_final_jobs_past_their_time_to_live_only(store: JobStore) -> None:
    done_id, queued_id = await submit(store, 2)
    leases = await store.lease("w1", 1, T0, VISIBILITY)
    assert leases[0].job.id == done_id
    await store.finish(leases[0], Decision(JobStatus.SUCCEEDED), T0, 10.0, b"{}")
    assert await store.purge(T0 + 9) == 0
    assert await store.purge(T0 + 10) == 1
    assert await store.get(done_id) is None
    assert await store.get(queued_id) is not None


async def test_two_stores_on_one_database_never_lease_the_same_job(store_factory: StoreFactory) -> None:
    first, second = store_factory(), store_factory()
    await first.open()
    await second.open()
    try:
        ids = set(await submit(first, 60))

        async def drain(which: JobStore, owner: str) -> list[Lease]:
            taken: list[Lease] = []
            while batch := await which.lease(owner, 4, T0, VISIBILITY):
                taken.extend(batch)
                await asyncio.sleep(0)
            return taken

        a, b = await asyncio.gather(drain(first, "a"), drain(second, "b"))
        a_ids, b_ids = {x.job.id for x in a}, {x.job.id for x in b}
        assert not a_ids & b_ids
        assert a_ids | b_ids == ids
        assert len(a) + len(b) == len(ids)
    finally:
        await first.close()
        await second.close()
