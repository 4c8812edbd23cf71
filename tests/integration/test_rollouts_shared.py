"""Two servers sharing a real PostgreSQL (scripts/postgres.sh) agree on a rollout: its split, and
each other's decisions."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from jobs import pg
from support.server import RunningServer, start_server
from support.v2 import simple_json_request, simple_rows
from tierserve.examples.basic import build_simple

pytestmark = pytest.mark.integration


def _version(http: httpx.Client, server: RunningServer, i: int) -> str:
    a, b = simple_rows(1, seed=i)
    response = http.post(
        f"{server.base_url}/v2/models/canary/infer", json=simple_json_request(a, b, id=f"r{i}")
    )
    assert response.status_code == 200, response.text
    version: str = response.json()["model_version"]
    return version


def _until(probe: Any, what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := probe()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return value


def test_two_servers_sharing_postgres_agree_on_the_split_and_decisions(tmp_path: Path) -> None:
    database = pg.fresh_database()
    repo = tmp_path / "models"
    for version in (1, 2):
        build_simple(repo / "canary" / str(version) / "model.onnx")
    (repo / "canary" / "config.yaml").write_text("version_policy: all\n")
    args = ["--database", database]
    with (
        start_server(repo, extra_args=args) as a,
        start_server(repo, extra_args=args) as b,
        httpx.Client(timeout=30.0) as http,
    ):
        body = {"model": "canary", "candidate": 2, "steps": [30, 100], "min_step_s": 3600}
        created = http.post(f"{a.base_url}/v1/rollouts", json=body)
        assert created.status_code == 201, created.text
        rollout_id = created.json()["id"]
        _until(lambda: http.get(f"{b.base_url}/v1/rollouts/canary").status_code == 200, "B to see it")
        assert http.get(f"{b.base_url}/v1/rollouts/canary").json()["id"] == rollout_id
        # B routes by the stored state within a tick; then every request id gets one version on both
        _until(lambda: any(_version(http, b, i) == "2" for i in range(40)), "B to route by the rollout")
        on_a = [_version(http, a, i) for i in range(80)]
        on_b = [_version(http, b, i) for i in range(80)]
        assert on_a == on_b and "1" in on_a and "2" in on_a
        # a decision taken on B (an operator's rollback) is in force on A within a tick
        assert http.post(f"{b.base_url}/v1/rollouts/canary/rollback").json()["phase"] == "rolled_back"
        _until(lambda: http.get(f"{a.base_url}/v1/rollouts/canary").json()["phase"] == "rolled_back", "A")
        _until(lambda: all(_version(http, a, i) == "1" for i in range(40)), "A to route everything to stable")
        # and a second rollout while one steps is refused on either server (the store decides)
        again = http.post(f"{a.base_url}/v1/rollouts", json={**body, "candidate": 2})
        assert again.status_code == 201
        assert http.post(f"{b.base_url}/v1/rollouts", json=body).status_code == 409
