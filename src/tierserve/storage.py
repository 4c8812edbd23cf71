"""Where the embedded or shared state lives, from ``--database`` (one parser for every store).

- empty: SQLite files in the state directory (``jobs.db``, ``security.db``, ...);
- ``sqlite:///PATH``: the job database is the file PATH, and the other SQLite files sit beside it
  (as in SQLAlchemy: ``sqlite:///state/jobs.db`` is relative, ``sqlite:////srv/jobs.db`` absolute);
- ``postgresql://...`` (or ``postgres://``): one PostgreSQL database holds every store's tables,
  shared by every server that names it (needs the ``postgres`` extra).
"""

from __future__ import annotations

import asyncio
import importlib.util
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from tierserve.errors import InvalidInput

T = TypeVar("T")

JOBS_FILE = "jobs.db"
USAGE = "--database must be empty (SQLite in the state directory), sqlite:///PATH or postgresql://..."


@dataclass(frozen=True)
class Database:
    postgres_url: str | None  # None: SQLite
    directory: Path  # SQLite: where the files are
    jobs_file: Path  # SQLite: the job database

    @property
    def is_postgres(self) -> bool:
        return self.postgres_url is not None

    def sqlite_file(self, name: str) -> Path:
        """Another store's SQLite file, beside the job database."""
        return self.directory / name


def parse_database(database: str, state_dir: Path) -> Database:
    if not database:
        return Database(None, state_dir, state_dir / JOBS_FILE)
    if database.startswith("sqlite:///"):
        jobs = Path(database.removeprefix("sqlite:///"))
        if not jobs.name:
            raise InvalidInput(f"--database {database}: name a file, e.g. sqlite:///var/tierserve/jobs.db")
        return Database(None, jobs.parent, jobs)
    if database.startswith(("postgresql://", "postgres://")):
        if importlib.util.find_spec("psycopg") is None or importlib.util.find_spec("psycopg_pool") is None:
            scheme = database.split("://")[0]
            raise InvalidInput(f"--database {scheme}://... needs psycopg: pip install 'tierserve[postgres]'")
        return Database(database, state_dir, state_dir / JOBS_FILE)
    raise InvalidInput(USAGE)


class SqliteOnThread:
    """One SQLite connection (WAL, ``synchronous=NORMAL``) used only from a thread of its own, so the
    event loop never waits on the file. Example::

        db = SqliteOnThread(path, [CREATE_TABLE], "rollout")
        await db.open()
        rows = await db.run(lambda: db.conn.execute("SELECT 1").fetchall())
    """

    def __init__(self, path: Path, schema: Sequence[str], what: str) -> None:
        self.path = path
        self.schema = schema
        self.what = what
        self._db: sqlite3.Connection | None = None
        self._thread: ThreadPoolExecutor | None = None

    async def open(self) -> None:
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{self.what}-sqlite")
        await self.run(self._open)

    def _open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10.0)
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")
            for statement in self.schema:
                db.executescript(statement)
        except (OSError, sqlite3.Error) as exc:
            raise InvalidInput(f"cannot open the {self.what} database {self.path}: {exc}") from exc
        self._db = db

    async def close(self) -> None:
        if self._thread is None:
            return
        if self._db is not None:
            await self.run(self._db.close)
            self._db = None
        self._thread.shutdown(wait=True)
        self._thread = None

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._thread is None:
            raise RuntimeError(f"the {self.what} store is not open")
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    @property
    def conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError(f"the {self.what} store is not open")
        return self._db


async def open_postgres_pool(conninfo: str, what: str, schema: Sequence[str], lock_key: int) -> Any:
    """A small autocommit pool on ``conninfo``, its schema created once however many servers start
    together (under the advisory lock ``lock_key``). An unreachable database is an InvalidInput."""
    import psycopg
    from psycopg_pool import AsyncConnectionPool

    pool = AsyncConnectionPool(
        conninfo, min_size=1, max_size=2, kwargs={"autocommit": True}, open=False, name=f"tierserve-{what}"
    )
    try:
        await pool.open(wait=True, timeout=15.0)
    except psycopg.Error as exc:
        await pool.close()
        raise InvalidInput(f"cannot connect to the {what} database: {exc}") from exc
    async with pool.connection() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key,))
        for statement in schema:
            await conn.execute(statement)
    return pool
