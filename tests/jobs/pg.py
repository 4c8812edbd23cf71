"""A real PostgreSQL server for the job tests, started once per test process by
``scripts/postgres.sh`` and removed at exit; each test takes a fresh database on it.

Tests that need it skip (with the reason) only when the PostgreSQL server binaries or psycopg are
absent; ``.ci/run`` installs both, so CI runs them.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from support.scripted import ScriptedServer

_SCRIPT = ScriptedServer("postgres.sh", probe="bindir", client="psycopg", start_timeout_s=120)


@dataclass(frozen=True)
class PostgresServer:
    dsn: str  # the server's own ``tierserve`` database
    directory: str

    def database_dsn(self, name: str) -> str:
        return self.dsn.rsplit("/", 1)[0] + "/" + name


def skip_reason() -> str | None:
    """Why PostgreSQL tests cannot run here, or None."""
    return _SCRIPT.skip_reason()


def server() -> PostgresServer:
    """The shared server, started on first use; skips the test when PostgreSQL is not installed."""
    values = _SCRIPT.values()
    return PostgresServer(values["DSN"], values["DIR"])


def fresh_database() -> str:
    """The DSN of a new, empty database on the shared server."""
    import psycopg

    pg = server()
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg.dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return pg.database_dsn(name)
