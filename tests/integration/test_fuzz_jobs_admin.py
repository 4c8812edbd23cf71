"""A stateful fuzz run (hypothesis) over the job and admin routes of one real server (issue 10).

The state machine makes API keys (valid and invalid), revokes them, submits jobs (valid and mangled)
under them, reads, lists (with any cursor, limit or status), cancels and re-queues them, and reads
the audit log with any filter. Invariants after every step: no answer is a 5xx; every error is
``{"error": ...}``; a job is visible to its own tenant and to operators, and a 404 to every other
tenant; a cancelled job stays cancelled; a revoked key is refused. Derandomised and bounded (about
300 requests, seconds), so it runs in the ordinary suite.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    rule,
    run_state_machine_as_test,
)

from security.servers import Key, make_key
from support.server import RunningServer, start_server

pytestmark = pytest.mark.integration

ROW = list(range(16))
TENANTS = ["acme", "beta"]
ANY_TEXT = st.text(max_size=30) | st.sampled_from(["²", "99999999999999999999999", "-1", "0", "", "%00"])
JUNK = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | ANY_TEXT
    | st.lists(st.integers(), max_size=3)
)


def _job(seed: int) -> dict[str, Any]:
    return {
        "model": "simple",
        "inputs": [
            {"name": name, "datatype": "INT32", "shape": [1, 16], "data": [seed] * 16}
            for name in ("INPUT0", "INPUT1")
        ],
    }


class Fixture:
    server: RunningServer
    admin: Key


FIXTURE = Fixture()
OWNER: dict[str, str] = {}  # job id -> tenant, over every example of the run
CANCELLED: set[str] = set()


@pytest.fixture(scope="module")
def fuzz_server(example_repo: Path) -> Iterator[Fixture]:
    state = Path(tempfile.mkdtemp(prefix="tierserve-fuzz-jobs-"))
    FIXTURE.admin = make_key("ops", "admin", state_dir=state)
    env = {"TIERSERVE_JOB_WORKERS": "0", "TIERSERVE_KEY_REFRESH_S": "0.2"}  # jobs stay queued: cancellable
    try:
        with start_server(example_repo, env=env, extra_args=["--state-dir", str(state)]) as server:
            FIXTURE.server = server
            yield FIXTURE
    finally:
        shutil.rmtree(state, ignore_errors=True)


class JobsAndAdmin(RuleBasedStateMachine):
    keys = Bundle("keys")
    jobs = Bundle("jobs")

    def __init__(self) -> None:
        super().__init__()
        self.http = httpx.Client(base_url=FIXTURE.server.base_url, timeout=60)
        self.admin = {"Authorization": f"Bearer {FIXTURE.admin.key}"}
        self.owner = OWNER  # the server outlives each example: what it holds is known across them
        self.cancelled = CANCELLED
        self.revoked: list[dict[str, str]] = []
        self.last: httpx.Response | None = None

    def teardown(self) -> None:
        self.http.close()

    def _send(self, method: str, path: str, headers: dict[str, str], **kwargs: Any) -> httpx.Response:
        response = self.http.request(method, path, headers=headers, **kwargs)
        self.last = response
        assert response.status_code < 500, f"{method} {path}: {response.status_code} {response.text[:300]}"
        if response.status_code >= 400:
            assert isinstance(response.json().get("error"), str), response.text[:300]
        return response

    # -- keys ------------------------------------------------------------------------------------

    @rule(target=keys, tenant=st.sampled_from(TENANTS))
    def make_user_key(self, tenant: str) -> dict[str, str]:
        made = self._send("POST", "/v1/admin/keys", self.admin, json={"tenant": tenant, "role": "user"})
        assert made.status_code == 201
        doc = made.json()
        return {"id": doc["id"], "tenant": tenant, "headers": f"Bearer {doc['key']}"}

    @rule(field=st.sampled_from(["tenant", "role", "tier", "rate", "burst", "concurrency", "x"]), value=JUNK)
    def make_invalid_key(self, field: str, value: Any) -> None:
        doc = {"tenant": "acme", "role": "user", field: value}
        response = self._send("POST", "/v1/admin/keys", self.admin, json=doc)
        if response.status_code == 201:  # the junk happened to be valid: it is an ordinary key
            self._send("DELETE", f"/v1/admin/keys/{response.json()['id']}", self.admin)

    @rule(key=consumes(keys))
    def revoke(self, key: dict[str, str]) -> None:
        assert self._send("DELETE", f"/v1/admin/keys/{key['id']}", self.admin).status_code == 200
        self.revoked.append(key)

    @rule(
        params=st.dictionaries(
            st.sampled_from(["cursor", "limit", "since", "until", "kind", "tenant", "action"]),
            ANY_TEXT,
            max_size=3,
        )
    )
    def read_the_audit_log(self, params: dict[str, str]) -> None:
        self._send("GET", "/v1/audit", self.admin, params=params)

    # -- jobs ------------------------------------------------------------------------------------

    @rule(target=jobs, key=keys, seed=st.integers(0, 1000))
    def submit(self, key: dict[str, str], seed: int) -> str:
        response = self._send("POST", "/v1/jobs", {"Authorization": key["headers"]}, json=_job(seed))
        assert response.status_code == 202, response.text
        job_id: str = response.json()["id"]
        self.owner[job_id] = key["tenant"]
        return job_id

    @rule(
        key=keys,
        field=st.sampled_from(
            ["model", "version", "tier", "max_attempts", "inputs", "outputs", "parameters"]
        ),
        value=JUNK,
    )
    def submit_mangled(self, key: dict[str, str], field: str, value: Any) -> None:
        self._send("POST", "/v1/jobs", {"Authorization": key["headers"]}, json={**_job(1), field: value})

    @rule(job=jobs, key=keys)
    def read(self, job: str, key: dict[str, str]) -> None:
        response = self._send("GET", f"/v1/jobs/{job}", {"Authorization": key["headers"]})
        if key["tenant"] == self.owner[job]:
            assert response.status_code == 200
            assert (response.json()["status"] == "cancelled") == (job in self.cancelled)
        else:
            assert response.status_code == 404  # another tenant's job: not even its existence is told
        assert self._send("GET", f"/v1/jobs/{job}", self.admin).status_code == 200

    @rule(job=jobs)
    def cancel(self, job: str) -> None:
        response = self._send("DELETE", f"/v1/jobs/{job}", self.admin)
        assert response.status_code == 200 and response.json()["status"] == "cancelled"
        self.cancelled.add(job)

    @rule(job=jobs)
    def requeue(self, job: str) -> None:
        assert self._send("POST", f"/v1/admin/jobs/{job}/requeue", self.admin).status_code == 409  # not dead

    @rule(
        key=keys,
        params=st.dictionaries(st.sampled_from(["cursor", "limit", "status", "model"]), ANY_TEXT, max_size=3),
    )
    def list_jobs(self, key: dict[str, str], params: dict[str, str]) -> None:
        response = self._send("GET", "/v1/jobs", {"Authorization": key["headers"]}, params=params)
        if response.status_code == 200:
            seen = {job["id"] for job in response.json()["jobs"]}
            assert all(self.owner.get(job_id, key["tenant"]) == key["tenant"] for job_id in seen), seen

    @invariant()
    def revoked_keys_are_refused(self) -> None:
        for key in self.revoked[-2:]:
            response = self.http.get("/v1/jobs", headers={"Authorization": key["headers"]})
            assert response.status_code == 401, response.text


def test_a_stateful_fuzz_run_over_jobs_and_admin(fuzz_server: Fixture) -> None:
    run_state_machine_as_test(
        JobsAndAdmin,
        settings=settings(
            max_examples=12,
            stateful_step_count=25,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
            phases=[Phase.generate],  # no shrinking: a failure reports its steps at once
        ),
    )
