"""Nothing accepted is lost: a server killed with jobs in hand, and two servers on one database.

Real ``tierserve serve`` processes: SIGKILL mid-run, then a restart on the same store; and two
servers working one PostgreSQL queue at the same time.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import httpx
import pytest

from jobs import pg
from jobs.client import FAST_JOBS_ENV, output, slow_job, submit, wait_final, write_jobs_repository
from support.server import start_server
from support.v2 import metric_value
from tierserve.jobs.states import JobStatus
from tierserve.jobs.store import open_store

pytestmark = pytest.mark.integration

JOBS = 24
WORK = 10.0  # rounds of the slow model per batch: about 0.1-0.2 s here
VISIBILITY_S = 2.0  # how long a dead server's leases hold the jobs it had


@pytest.fixture(scope="module")
def jobs_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_jobs_repository(tmp_path_factory.mktemp("jobs-repo"))


def running_in_store(database: str, state_dir: Path) -> set[str]:
    """The ids of jobs the store holds as running (read with the server dead: exact)."""

    async def read() -> set[str]:
        store = open_store(database, state_dir)
        await store.open()
        try:
            page = await store.list_jobs(status=JobStatus.RUNNING, model=None, limit=10_000, before=None)
            return {job.id for job in page.jobs}
        finally:
            await store.close()

    return asyncio.run(read())


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_jobs_survive_a_killed_server_and_run_again_at_most_once_more(
    store: str, jobs_repo: Path, tmp_path: Path
) -> None:
    database = pg.fresh_database() if store == "postgres" else ""
    args = ["--state-dir", str(tmp_path), *(["--database", database] if database else [])]
    env = {
        **FAST_JOBS_ENV,
        "TIERSERVE_JOB_WORKERS": "4",
        "TIERSERVE_JOB_VISIBILITY_TIMEOUT_S": str(VISIBILITY_S),
    }
    with start_server(jobs_repo, env=env, extra_args=args) as first:
        with httpx.Client(base_url=first.base_url, timeout=30.0) as http:
            ids = [submit(http, slow_job(i, WORK)) for i in range(JOBS)]  # 202: durable from here
            deadline = time.monotonic() + 20
            while not http.get("/v1/jobs", params={"status": "running"}).json()["jobs"]:
                assert time.monotonic() < deadline, "no job started running"
                time.sleep(0.02)  # polling interval of a bounded wait
        assert first.stop(signal.SIGKILL) == -signal.SIGKILL
    running_at_kill = running_in_store(database, tmp_path)
    assert running_at_kill, "the kill found no job running; nothing was tested"

    with (
        start_server(jobs_repo, env=env, extra_args=args) as second,
        httpx.Client(base_url=second.base_url, timeout=30.0) as http,
    ):
        done = wait_final(http, ids, limit_s=60)
    assert set(done) == set(ids), "a job accepted before the kill is missing"
    assert {doc["status"] for doc in done.values()} == {"succeeded"}
    for i, job_id in enumerate(ids):
        assert output(done[job_id], "Y") == slow_job(i, WORK)["inputs"][0]["data"]
    duplicates = {job_id for job_id, doc in done.items() if doc["attempts"] > 1}
    print(
        f"\n{store}: {JOBS} jobs, {len(running_at_kill)} running at the kill, "
        f"{len(duplicates)} run more than once"
    )
    assert duplicates <= running_at_kill  # only a job in hand at the kill may run twice
    assert all(done[job_id]["attempts"] == 2 for job_id in duplicates)


def test_two_servers_share_one_postgresql_queue_and_never_run_a_job_twice(
    jobs_repo: Path, tmp_path: Path
) -> None:
    database = pg.fresh_database()
    env = {**FAST_JOBS_ENV, "TIERSERVE_JOB_WORKERS": "3"}
    args = ["--database", database]
    with (
        start_server(jobs_repo, env=env, extra_args=[*args, "--state-dir", str(tmp_path / "a")]) as a,
        start_server(jobs_repo, env=env, extra_args=[*args, "--state-dir", str(tmp_path / "b")]) as b,
        httpx.Client(base_url=a.base_url, timeout=30.0) as http_a,
        httpx.Client(base_url=b.base_url, timeout=30.0) as http_b,
    ):
        ids = [submit(http_a if i % 2 else http_b, slow_job(i, WORK)) for i in range(JOBS)]
        done = wait_final(http_a, ids, limit_s=60)
        ran = {
            name: metric_value(client.get("/metrics").text, "tierserve_tier_requests_total", model="slow")
            for name, client in (("a", http_a), ("b", http_b))
        }
    assert {doc["status"] for doc in done.values()} == {"succeeded"}
    assert all(doc["attempts"] == 1 for doc in done.values())
    assert ran["a"] > 0 and ran["b"] > 0, f"one server did all the work: {ran}"
    assert ran["a"] + ran["b"] == JOBS  # each job ran once, on one of the two
