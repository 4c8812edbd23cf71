"""Security shared by several servers: limits in a real Redis, keys and the audit log in a real
PostgreSQL (started by scripts/redis.sh and scripts/postgres.sh)."""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from jobs import pg
from security import redis_server
from security.servers import (
    FAST_REFRESH_ENV,
    make_key,
    simple_body,
    slow_body,
    wait_for,
    write_security_repository,
)
from support.server import RunningServer, start_server
from support.v2 import assert_json_error

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def shared_repo(tmp_path_factory: pytest.TempPathFactory, example_repo: Path) -> Path:
    return write_security_repository(tmp_path_factory.mktemp("shared-repo"), example_repo)


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="tierserve-shared-"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def two_servers(repo: Path, directory: Path, redis_url: str) -> tuple[RunningServer, RunningServer]:
    """Two servers, each its own job database, one security.db (beside both) and one Redis."""
    servers = []
    for name in ("a", "b"):
        args = ["--database", f"sqlite:///{directory}/jobs-{name}.db", "--redis", redis_url]
        servers.append(start_server(repo, env=FAST_REFRESH_ENV, extra_args=args))
    return servers[0], servers[1]


def test_rate_and_concurrency_limits_hold_across_two_servers_sharing_redis(
    shared_repo: Path, shared_dir: Path
) -> None:
    url = redis_server.server().url
    jobs_db = f"sqlite:///{shared_dir}/jobs-a.db"
    rated = make_key("acme", "user", database=jobs_db, extra=["--rate", "10/min"])
    capped = make_key("acme", "user", database=jobs_db, extra=["--concurrency", "1"])
    a, b = two_servers(shared_repo, shared_dir, url)
    with a, b, httpx.Client(timeout=60.0) as http:
        # 12 requests, alternating between the servers: the key's window of 10 per minute is one
        # window, so exactly 10 are admitted (each server alone would have admitted all its 6).
        statuses = [
            http.post(
                f"{server.base_url}/v2/models/simple/infer", json=simple_body(), headers=rated.headers
            ).status_code
            for server in (a, b) * 6
        ]
        assert statuses.count(200) == 10 and statuses.count(429) == 2, statuses

        results: list[int] = []

        def slow_on_a() -> None:
            with httpx.Client(timeout=60.0) as own:
                response = own.post(
                    f"{a.base_url}/v2/models/slow/infer", json=slow_body(1, 60.0), headers=capped.headers
                )
                results.append(response.status_code)

        worker = threading.Thread(target=slow_on_a)
        worker.start()
        try:
            # While server a runs the key's one request, server b refuses the key's next.
            wait_for(
                lambda: (
                    http.post(
                        f"{b.base_url}/v2/models/simple/infer", json=simple_body(), headers=capped.headers
                    ).status_code
                    == 429
                ),
                what="server b refusing while server a holds the key's slot",
            )
        finally:
            worker.join(60)
        assert results == [200]
        ok = http.post(f"{b.base_url}/v2/models/simple/infer", json=simple_body(), headers=capped.headers)
        assert ok.status_code == 200, ok.text


def test_an_unreachable_redis_fails_the_start(shared_repo: Path) -> None:
    from support.server import ServerStartError

    with pytest.raises(ServerStartError, match="cannot reach Redis"):
        start_server(shared_repo, extra_args=["--redis", "redis://127.0.0.1:1/0"], ready_timeout=30)


def test_keys_and_audit_live_in_postgresql_beside_the_jobs(shared_repo: Path) -> None:
    import psycopg

    dsn = pg.fresh_database()
    admin = make_key("ops", "admin", database=dsn)
    user = make_key("acme", "user", database=dsn, extra=["--tier", "silver"])
    with (
        start_server(shared_repo, env=FAST_REFRESH_ENV, extra_args=["--database", dsn]) as server,
        httpx.Client(base_url=server.base_url, timeout=30.0) as http,
    ):
        assert_json_error(http.post("/v2/models/simple/infer", json=simple_body()), 401)
        assert (
            http.post("/v2/models/simple/infer", json=simple_body(), headers=user.headers).status_code == 200
        )
        job = http.post("/v1/jobs", json={"model": "simple", **simple_body()}, headers=user.headers).json()
        late = make_key("late", "reader", database=dsn)  # made while the server runs
        wait_for(
            lambda: http.get("/v2/models/simple", headers=late.headers).status_code == 200, what="the new key"
        )

        def inference_audited() -> list[object] | None:
            records = http.get("/v1/audit", params={"action": "infer"}, headers=admin.headers).json()[
                "records"
            ]
            return records or None

        (record,) = wait_for(inference_audited, what="the inference audit record")
        assert (record["tenant"], record["tier"], record["key_id"]) == ("acme", "silver", user.id)  # type: ignore[index]
    with psycopg.connect(dsn) as conn:
        actions = [row[0] for row in conn.execute("SELECT action FROM audit_log ORDER BY seq")]
        # The inference record is queued, the CLI's are written at once: their order may differ.
        assert sorted(actions) == ["infer", "keys.create", "keys.create", "keys.create"]
        (owner,) = conn.execute("SELECT tenant FROM jobs WHERE id = %s", (job["id"],)).fetchone()  # type: ignore[misc]
        assert owner == "acme"
        hashes = [row[0] for row in conn.execute("SELECT key_hash FROM api_keys")]
        assert user.key not in str(hashes) and len(hashes) == 3
