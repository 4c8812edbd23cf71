"""Where the embedded or shared state lives, from ``--database`` (one parser for every store).

- empty: SQLite files in the state directory (``jobs.db``, ``security.db``, ...);
- ``sqlite:///PATH``: the job database is the file PATH, and the other SQLite files sit beside it
  (as in SQLAlchemy: ``sqlite:///state/jobs.db`` is relative, ``sqlite:////srv/jobs.db`` absolute);
- ``postgresql://...`` (or ``postgres://``): one PostgreSQL database holds every store's tables,
  shared by every server that names it (needs the ``postgres`` extra).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from tierserve.errors import InvalidInput

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
