"""Stores that fail closed and a job store with bounds (issue 10, items 7-10), on real servers.

- jobs.db or security.db deleted, emptied or corrupted: the server refuses to start and says why
  (never "authentication off", never jobs silently lost); deleting the id file it names is the
  deliberate way to start afresh.
- Unfinished jobs are capped per tenant (429) and in all (503), with Retry-After; a job's stored
  request and result are capped too.
- Tenants from JWTs are validated like those of keys: "acme/x" cannot alias tenant "acme"'s
  idempotency keys, and "acme\\n" is no tenant name.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from security.servers import Key, make_key
from security.tokens import SECRET, hs256
from support.server import console_script, free_port, start_server
from support.v2 import assert_json_error

pytestmark = pytest.mark.integration

DEADLINE_S = 60.0


def _job(seed: int = 0) -> dict[str, Any]:
    return {
        "model": "simple",
        "inputs": [
            {"name": name, "datatype": "INT32", "shape": [1, 16], "data": [seed] * 16}
            for name in ("INPUT0", "INPUT1")
        ],
    }


def _serve_once(repo: Path, state: Path) -> subprocess.CompletedProcess[str]:
    """``tierserve serve`` expected to refuse to start: its exit status and output."""
    return subprocess.run(
        [*console_script(), "serve", "--model-repository", str(repo), "--port", str(free_port()),
         "--state-dir", str(state)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def _assert_refused(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    for fragment in fragments:
        assert fragment in output, output[-3000:]


def _submit_some(repo: Path, state: Path, count: int) -> list[str]:
    with start_server(
        repo, extra_args=["--state-dir", str(state)], env={"TIERSERVE_JOB_WORKERS": "0"}
    ) as server:
        with httpx.Client(base_url=server.base_url, timeout=30) as http:
            ids = []
            for seed in range(count):
                response = http.post("/v1/jobs", json=_job(seed))
                assert response.status_code == 202, response.text
                ids.append(response.json()["id"])
        assert server.stop() == 0
    return ids


@pytest.mark.parametrize("damage", ["deleted", "emptied", "corrupted"])
def test_a_damaged_job_database_stops_the_start(example_repo: Path, tmp_path: Path, damage: str) -> None:
    state = tmp_path / "state"
    ids = _submit_some(example_repo, state, 20)
    db = state / "jobs.db"
    for leftover in (state / "jobs.db-wal", state / "jobs.db-shm"):
        leftover.unlink(missing_ok=True)
    if damage == "deleted":
        db.unlink()
    elif damage == "emptied":
        db.write_bytes(b"")
    else:
        data = bytearray(db.read_bytes())
        page = 4096
        for number in range(1, min(5, len(data) // page)):  # four pages after the header page
            data[number * page : (number + 1) * page] = b"\xa5" * page
        db.write_bytes(bytes(data))
    _assert_refused(_serve_once(example_repo, state), "job database", str(db))
    if damage == "corrupted":
        return
    # Starting afresh is a deliberate act: delete the id file the message names.
    (state / "jobs.db.id").unlink()
    with start_server(example_repo, extra_args=["--state-dir", str(state)]) as server:
        assert httpx.get(f"{server.base_url}/v1/jobs/{ids[0]}").status_code == 404


def test_a_truncated_security_database_never_turns_authentication_off(
    example_repo: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    key = make_key("acme", "admin", state_dir=state)
    with start_server(example_repo, extra_args=["--state-dir", str(state)]) as server:
        assert httpx.get(f"{server.base_url}/v1/jobs").status_code == 401
        assert httpx.get(f"{server.base_url}/v1/jobs", headers=key.headers).status_code == 200
        assert server.stop() == 0
    for leftover in (state / "security.db-wal", state / "security.db-shm"):
        leftover.unlink(missing_ok=True)
    (state / "security.db").write_bytes(b"")
    _assert_refused(_serve_once(example_repo, state), "security database")


def _wait_status(http: httpx.Client, job_id: str, status: str) -> dict[str, Any]:
    deadline = time.monotonic() + DEADLINE_S
    while True:
        doc: dict[str, Any] = http.get(f"/v1/jobs/{job_id}").json()
        if doc["status"] == status:
            return doc
        assert time.monotonic() < deadline, f"job {job_id} is still {doc['status']}"
        time.sleep(0.05)


def test_unfinished_jobs_are_capped_per_tenant_and_in_all(example_repo: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    keys: dict[str, Key] = {t: make_key(t, "user", state_dir=state) for t in ("acme", "beta", "gamma")}
    env = {
        "TIERSERVE_JOB_WORKERS": "0",
        "TIERSERVE_MAX_JOBS": "5",
        "TIERSERVE_MAX_JOBS_PER_TENANT": "3",
        "TIERSERVE_MAX_JOB_BODY_BYTES": "4096",
    }
    with (
        start_server(example_repo, env=env, extra_args=["--state-dir", str(state)]) as server,
        httpx.Client(base_url=server.base_url, timeout=30) as http,
    ):
        acme, beta, gamma = keys["acme"].headers, keys["beta"].headers, keys["gamma"].headers
        for seed in range(3):
            assert http.post("/v1/jobs", json=_job(seed), headers=acme).status_code == 202
        refused = http.post("/v1/jobs", json=_job(9), headers=acme)
        assert "quota" in assert_json_error(refused, 429)
        assert int(refused.headers["Retry-After"]) >= 1
        for seed in range(2):
            assert http.post("/v1/jobs", json=_job(seed), headers=beta).status_code == 202
        full = http.post("/v1/jobs", json=_job(0), headers=gamma)  # 5 unfinished in all
        assert "unfinished jobs" in assert_json_error(full, 503)
        assert int(full.headers["Retry-After"]) >= 1
        # Cancelling frees room (seen at the next count of the store).
        listed = http.get("/v1/jobs", headers=acme).json()["jobs"]
        assert http.delete(f"/v1/jobs/{listed[0]['id']}", headers=acme).status_code == 200
        deadline = time.monotonic() + DEADLINE_S
        while http.post("/v1/jobs", json=_job(1), headers=gamma).status_code != 202:
            assert time.monotonic() < deadline, "a cancelled job never freed room in the store"
            time.sleep(0.1)
        big = _job(0)
        big["parameters"] = {"note": "x" * 5000}  # over the 4 KiB a stored job may take
        assert_json_error(http.post("/v1/jobs", json=big, headers=gamma), 413)


def test_a_result_over_the_limit_fails_its_job_with_the_reason(example_repo: Path, tmp_path: Path) -> None:
    env = {"TIERSERVE_MAX_JOB_RESULT_BYTES": "64"}
    with (
        start_server(example_repo, env=env) as server,
        httpx.Client(base_url=server.base_url, timeout=30) as http,
    ):
        accepted = http.post("/v1/jobs", json=_job(1)).json()
        doc = _wait_status(http, accepted["id"], "failed")
        assert "max_job_result_bytes" in doc["last_error"] and "result" not in doc


def test_tenant_names_from_jwts_are_validated(example_repo: Path) -> None:
    env = {"TIERSERVE_JWT_SECRET": SECRET}
    with (
        start_server(example_repo, env=env, extra_args=["--jwt-audience", "tierserve"]) as server,
        httpx.Client(base_url=server.base_url, timeout=30) as http,
    ):
        good = {"Authorization": f"Bearer {hs256(tenant='acme')}"}
        assert (
            http.post("/v1/jobs", json=_job(), headers={**good, "Idempotency-Key": "x/k"}).status_code == 202
        )
        for tenant in ("acme/x", "acme\n", " acme", "a" * 200, ""):
            token = {"Authorization": f"Bearer {hs256(tenant=tenant)}"}
            response = http.post("/v1/jobs", json=_job(), headers={**token, "Idempotency-Key": "k"})
            assert_json_error(response, 401)


def test_a_key_tenant_with_a_newline_is_refused(tmp_path: Path) -> None:
    result = subprocess.run(
        [*console_script(), "keys", "create", "--tenant", "acme\n", "--role", "user", "--json",
         "--state-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "tenant" in result.stderr and "Traceback" not in result.stderr


def test_a_store_that_fails_under_a_request_is_503_with_the_reason(
    example_repo: Path, tmp_path: Path
) -> None:
    import sqlite3

    state = tmp_path / "state"
    env = {"TIERSERVE_JOB_WORKERS": "0"}
    with (
        start_server(example_repo, env=env, extra_args=["--state-dir", str(state)]) as server,
        httpx.Client(base_url=server.base_url, timeout=60) as http,
    ):
        assert http.post("/v1/jobs", json=_job(1)).status_code == 202
        locker = sqlite3.connect(state / "jobs.db", isolation_level=None)
        try:
            locker.execute("BEGIN EXCLUSIVE")  # another process holds the store past the busy timeout
            refused = http.post("/v1/jobs", json=_job(2))
            message = assert_json_error(refused, 503)
            assert "store" in message and "locked" in message
            assert int(refused.headers["Retry-After"]) >= 1
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        assert http.post("/v1/jobs", json=_job(3)).status_code == 202
