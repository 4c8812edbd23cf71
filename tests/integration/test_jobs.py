"""Durable async jobs through HTTP on a real ``tierserve serve``, on SQLite and on PostgreSQL."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from jobs import pg
from jobs.client import (
    FAST_JOBS_ENV,
    job,
    output,
    simple_job,
    slow_job,
    submit,
    wait_final,
    wait_status,
    write_jobs_repository,
)
from support.server import RunningServer, start_server
from support.v2 import JSON, UNKNOWN_MODEL_PREFIX, assert_json_error, metric_value

pytestmark = pytest.mark.integration

SLOW_WORK = 40.0  # rounds of the slow model: long enough to hold the single worker for a while


@pytest.fixture(scope="module")
def jobs_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_jobs_repository(tmp_path_factory.mktemp("jobs-repo"))


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def jobs_server(request: pytest.FixtureRequest, jobs_repo: Path) -> Iterator[RunningServer]:
    """One worker (so a slow job holds back the next one), fast retries, two attempts by default."""
    state = Path(tempfile.mkdtemp(prefix="tierserve-jobs-state-"))
    args = ["--state-dir", str(state)]
    if request.param == "postgres":
        args += ["--database", pg.fresh_database()]
    env = {**FAST_JOBS_ENV, "TIERSERVE_JOB_WORKERS": "1", "TIERSERVE_JOB_MAX_ATTEMPTS": "2"}
    try:
        with start_server(jobs_repo, env=env, extra_args=args) as server:
            yield server
    finally:
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture
def http(jobs_server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=jobs_server.base_url, timeout=30.0) as client:
        yield client


def test_a_job_is_accepted_run_at_its_tier_and_collected(http: httpx.Client) -> None:
    before = metric_value(
        http.get("/metrics").text, "tierserve_tier_requests_total", model="simple", tier="bronze"
    )
    doc, a, b = simple_job(seed=1, id="req-1")
    response = http.post("/v1/jobs", json=doc)
    assert response.status_code == 202, response.text
    assert response.headers["content-type"] == JSON
    accepted = response.json()
    job_id = accepted["id"]
    assert accepted["status"] == "queued"
    assert accepted["links"] == {"self": f"/v1/jobs/{job_id}", "events": f"/v1/jobs/{job_id}/events"}
    assert response.headers["location"] == f"/v1/jobs/{job_id}"

    done = wait_final(http, [job_id])[job_id]
    assert done["status"] == "succeeded", done
    assert (done["attempts"], done["max_attempts"], done["tier"], done["model"]) == (1, 2, "bronze", "simple")
    assert done["last_error"] is None
    assert done["created_at"] <= done["started_at"] <= done["finished_at"] < done["expires_at"]
    assert done["result"]["id"] == "req-1" and done["result"]["model_name"] == "simple"
    assert output(done, "OUTPUT0") == (a + b).ravel().tolist()
    assert output(done, "OUTPUT1") == (a - b).ravel().tolist()
    after = metric_value(
        http.get("/metrics").text, "tierserve_tier_requests_total", model="simple", tier="bronze"
    )
    assert after == before + 1  # through the engine's scheduler, at the job's tier

    gold = submit(http, simple_job(seed=2, tier="gold")[0])
    assert wait_final(http, [gold])[gold]["tier"] == "gold"


def test_the_same_idempotency_key_returns_the_same_job(http: httpx.Client) -> None:
    key = f"key-{time.monotonic_ns()}"
    doc = simple_job(seed=3)[0]
    first = http.post("/v1/jobs", json=doc, headers={"Idempotency-Key": key})
    again = http.post("/v1/jobs", json=doc, headers={"Idempotency-Key": key})
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["idempotent-replayed"] == "true" and "idempotent-replayed" not in first.headers
    different = http.post("/v1/jobs", json=simple_job(seed=4)[0], headers={"Idempotency-Key": key})
    assert first.json()["id"] in assert_json_error(different, 422)
    assert job(http, first.json()["id"])["idempotency_key"] == key


def test_bad_jobs_are_refused_with_the_v2_error_body(http: httpx.Client) -> None:
    assert "parse" in assert_json_error(http.post("/v1/jobs", content=b"{nope"), 400)
    unknown = http.post("/v1/jobs", json={**simple_job()[0], "model": "nope"})
    assert assert_json_error(unknown, 404).startswith(UNKNOWN_MODEL_PREFIX)
    assert "tier" in assert_json_error(http.post("/v1/jobs", json=simple_job(tier="platinum")[0]), 400)
    assert "max_attempts" in assert_json_error(http.post("/v1/jobs", json=simple_job(max_attempts=0)[0]), 400)
    wrong = {"model": "simple", "inputs": [{"name": "X", "datatype": "FP32", "shape": [1], "data": [1.0]}]}
    assert "X" in assert_json_error(http.post("/v1/jobs", json=wrong), 400)
    assert "unknown job" in assert_json_error(http.get("/v1/jobs/no-such-job"), 404)
    assert_json_error(http.delete("/v1/jobs/no-such-job"), 404)
    assert_json_error(http.get("/v1/jobs/no-such-job/events"), 404)
    assert_json_error(http.post("/v1/admin/jobs/no-such-job/requeue"), 404)
    assert_json_error(http.get("/v1/jobs", params={"status": "bogus"}), 400)
    assert_json_error(http.get("/v1/jobs", params={"limit": 0}), 400)


def test_jobs_are_listed_newest_first_by_status_and_model_in_pages(http: httpx.Client) -> None:
    ids = [submit(http, simple_job(seed=10 + i)[0]) for i in range(5)]
    wait_final(http, ids)
    seen: list[str] = []
    cursor = None
    while True:
        params = {
            "status": "succeeded",
            "model": "simple",
            "limit": 2,
            **({"cursor": cursor} if cursor else {}),
        }
        response = http.get("/v1/jobs", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["jobs"]) <= 2
        assert all(j["status"] == "succeeded" and j["model"] == "simple" for j in page["jobs"])
        assert all("result" not in j for j in page["jobs"])  # listings leave results out
        seen += [j["id"] for j in page["jobs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen))
    assert seen[:5] == ids[::-1]
    other_model = http.get("/v1/jobs", params={"model": "slow"}).json()["jobs"]
    assert all(j["model"] == "slow" for j in other_model)


def test_a_queued_job_can_be_cancelled_and_a_running_one_cannot(http: httpx.Client) -> None:
    blocker = submit(http, slow_job(1, SLOW_WORK))
    wait_status(http, blocker, "running")  # the single worker is busy now
    queued = submit(http, simple_job(seed=20)[0])
    cancelled = http.delete(f"/v1/jobs/{queued}")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    assert http.delete(f"/v1/jobs/{queued}").json()["status"] == "cancelled"  # again: same answer
    assert "running" in assert_json_error(http.delete(f"/v1/jobs/{blocker}"), 409)
    assert wait_final(http, [blocker])[blocker]["status"] == "succeeded"
    assert job(http, queued)["status"] == "cancelled" and job(http, queued)["attempts"] == 0
    assert queued in [j["id"] for j in http.get("/v1/jobs", params={"status": "cancelled"}).json()["jobs"]]


def test_a_job_that_keeps_failing_is_a_dead_letter_until_an_admin_requeues_it(http: httpx.Client) -> None:
    blocker = submit(http, slow_job(2, SLOW_WORK))
    wait_status(http, blocker, "running")
    doomed = submit(http, simple_job(seed=30)[0])
    # The model goes away while the job waits: each attempt fails until attempts run out.
    assert http.post("/v2/repository/models/simple/unload").status_code == 200
    try:
        dead = wait_final(http, [doomed])[doomed]
        assert dead["status"] == "dead" and dead["attempts"] == 2
        assert dead["last_error"].startswith(UNKNOWN_MODEL_PREFIX)
        assert "result" not in dead
        assert doomed in [j["id"] for j in http.get("/v1/jobs", params={"status": "dead"}).json()["jobs"]]
    finally:
        assert http.post("/v2/repository/models/simple/load").status_code == 200
    requeued = http.post(f"/v1/admin/jobs/{doomed}/requeue")
    assert requeued.status_code == 200, requeued.text
    assert requeued.json()["status"] in ("queued", "running", "succeeded")
    done = wait_final(http, [doomed])[doomed]
    assert done["status"] == "succeeded" and done["attempts"] == 1
    assert "dead" in assert_json_error(http.post(f"/v1/admin/jobs/{doomed}/requeue"), 409)


def test_the_events_stream_follows_a_job_to_its_end(http: httpx.Client) -> None:
    job_id = submit(http, slow_job(3, 10.0))
    statuses = []
    with http.stream("GET", f"/v1/jobs/{job_id}/events", timeout=30.0) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        event: dict[str, str] = {}
        for line in stream.iter_lines():
            if line.startswith(":"):
                continue
            if line:
                name, _, value = line.partition(": ")
                event[name] = value
                continue
            assert event["event"] == "status"
            statuses.append(httpx.Response(200, content=event["data"]).json()["status"])
            event = {}
    assert statuses[-1] == "succeeded"
    assert statuses == sorted(set(statuses), key=["queued", "running", "succeeded"].index)


def test_the_openapi_document_describes_every_job_route(http: httpx.Client) -> None:
    paths = http.get("/openapi.json").json()["paths"]
    submit_doc = paths["/v1/jobs"]["post"]
    assert {"202", "400", "404", "413", "422"} <= set(submit_doc["responses"])
    assert "200" not in submit_doc["responses"]
    assert submit_doc["requestBody"]["content"]["application/json"]["schema"]["required"] == [
        "model",
        "inputs",
    ]
    assert [p["name"] for p in submit_doc["parameters"]] == ["Idempotency-Key"]
    assert {"status", "model", "limit", "cursor"} <= {
        p["name"] for p in paths["/v1/jobs"]["get"]["parameters"]
    }
    assert {"get", "delete"} <= set(paths["/v1/jobs/{job_id}"])
    assert "409" in paths["/v1/jobs/{job_id}"]["delete"]["responses"]
    events = paths["/v1/jobs/{job_id}/events"]["get"]["responses"]
    assert "text/event-stream" in events["200"]["content"] and "404" in events
    assert "post" in paths["/v1/admin/jobs/{job_id}/requeue"]


def test_finished_jobs_are_purged_after_their_time_to_live(jobs_repo: Path, tmp_path: Path) -> None:
    env = {**FAST_JOBS_ENV, "TIERSERVE_JOB_RESULT_TTL_S": "0.5"}
    with (
        start_server(jobs_repo, env=env, extra_args=["--state-dir", str(tmp_path)]) as server,
        httpx.Client(base_url=server.base_url, timeout=30.0) as client,
    ):
        job_id = submit(client, simple_job(seed=40)[0])
        assert wait_final(client, [job_id])[job_id]["status"] == "succeeded"
        deadline = time.monotonic() + 10
        while client.get(f"/v1/jobs/{job_id}").status_code != 404:
            assert time.monotonic() < deadline, "the finished job was not purged"
            time.sleep(0.1)  # polling interval of a bounded wait
