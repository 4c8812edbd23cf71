"""A real PostgreSQL server for the job tests, started once per test process by
``scripts/postgres.sh`` and removed at exit; each test takes a fresh database on it.

Tests that need it skip (with the reason) only when the PostgreSQL server binaries or psycopg are
absent; ``.ci/run`` installs both, so CI runs them.
"""

from __future__ import annotations

import atexit
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "postgres.sh"
START_TIMEOUT_S = 120


@dataclass(frozen=True)
class PostgresServer:
    dsn: str  # the server's own ``tierserve`` database
    directory: str

    def database_dsn(self, name: str) -> str:
        return self.dsn.rsplit("/", 1)[0] + "/" + name


_server: PostgresServer | None = None
_failure: str | None = None


def skip_reason() -> str | None:
    """Why PostgreSQL tests cannot run here, or None."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install -e '.[test]')"
    found = subprocess.run(["bash", str(SCRIPT), "bindir"], capture_output=True, text=True, check=False)
    if found.returncode != 0:
        return "PostgreSQL server binaries not found (run scripts/postgres.sh install)"
    return None


def server() -> PostgresServer:
    """The shared server, started on first use; skips the test when PostgreSQL is not installed."""
    global _server, _failure
    if _server is not None:
        return _server
    reason = skip_reason()
    if reason is not None:
        pytest.skip(reason)
    if _failure is not None:
        pytest.fail(_failure)
    started = subprocess.run(
        ["bash", str(SCRIPT), "start"], capture_output=True, text=True, timeout=START_TIMEOUT_S, check=False
    )
    if started.returncode != 0:
        _failure = f"scripts/postgres.sh start failed ({started.returncode}):\n{started.stderr}"
        pytest.fail(_failure)
    values = dict(line.split("=", 1) for line in started.stdout.splitlines() if "=" in line)
    _server = PostgresServer(values["DSN"], values["DIR"])
    atexit.register(_stop, _server)
    return _server


def fresh_database() -> str:
    """The DSN of a new, empty database on the shared server."""
    import psycopg

    pg = server()
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg.dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return pg.database_dsn(name)


def _stop(pg: PostgresServer) -> None:
    subprocess.run(["bash", str(SCRIPT), "stop", pg.directory], capture_output=True, timeout=60, check=False)
