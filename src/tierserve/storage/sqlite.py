"""Every embedded SQLite store opens its file here: one connection set-up (WAL, ``synchronous=NORMAL``,
a busy timeout, autocommit unless a store says ``BEGIN``), the fail-closed identity check, and a
connection on a thread of its own for stores that must never hold the event loop.

Stores that fail closed (``identity=True``: the job and security databases): a store file that is
missing, truncated or corrupt stops the server at start with the reason, instead of being silently
replaced by an empty one. SQLite creates a fresh, empty database wherever its file is missing or
empty. For the job store that meant accepted jobs silently lost; for the security store, a server
that came up with no keys, and so with authentication off. So each such store has an identity: a
random id kept both in the database (table ``store_identity``) and in a small file beside it
(``<file>.id``). At open:

- the id file exists, but the database is missing, empty, or holds another id -> refuse to start,
  saying how to restore the file or (deliberately) start afresh by deleting the id file;
- the database fails SQLite's ``quick_check`` (corrupt pages) -> refuse to start;
- neither exists (a new store) -> create both; a store made before ids existed gets one.
"""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from tierserve.errors import InvalidInput

T = TypeVar("T")

ID_SUFFIX = ".id"
BUSY_TIMEOUT_S = 10.0  # how long a statement waits on another connection's write lock


def connect(
    path: Path, what: str, *, busy_timeout_s: float = BUSY_TIMEOUT_S, identity: bool = False
) -> sqlite3.Connection:
    """A connection to the SQLite file ``path`` (``what``: e.g. "job database", for messages), made
    if missing: WAL (readers never block the writer), ``synchronous=NORMAL`` (a commit is in the log,
    synced at checkpoints), autocommit. With ``identity`` the file must be the store its id file
    names (see above). Raises InvalidInput with the reason."""
    if identity:
        check_before_open(path, what)  # missing or emptied: fail, never start empty
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=busy_timeout_s)
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")
    except (OSError, sqlite3.Error) as exc:
        raise InvalidInput(f"cannot open the {what} {path}: {exc}") from exc
    if identity:
        try:
            claim(db, path, what)  # corrupt, or another store: fail with the reason
        except BaseException:
            db.close()
            raise
    return db


class SqliteOnThread:
    """One connection (``connect``) used only from a thread of its own, so the event loop never
    waits on the file. Example::

        db = SqliteOnThread(path, [CREATE_TABLE], "rollout database")
        await db.open()
        rows = await db.run(lambda: db.conn.execute("SELECT 1").fetchall())
    """

    def __init__(self, path: Path, schema: Sequence[str], what: str, *, identity: bool = False) -> None:
        self.path = path
        self.schema = schema
        self.what = what
        self.identity = identity
        self._db: sqlite3.Connection | None = None
        self._thread: ThreadPoolExecutor | None = None

    async def open(self) -> None:
        prefix = self.what.split()[0]
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{prefix}-sqlite")
        await self.run(self._open)

    def _open(self) -> None:
        db = connect(self.path, self.what, identity=self.identity)
        try:
            for statement in self.schema:
                db.executescript(statement)
        except sqlite3.Error as exc:
            db.close()
            raise InvalidInput(f"cannot open the {self.what} {self.path}: {exc}") from exc
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
            raise RuntimeError(f"the {self.what} is not open")
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    @property
    def conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError(f"the {self.what} is not open")
        return self._db

    def transaction(self, fn: Callable[[sqlite3.Connection], T], *, immediate: bool = False) -> T:
        """Run ``fn`` in one transaction on this connection's thread (call it through ``run``)."""
        return in_transaction(self.conn, fn, immediate=immediate)


def in_transaction(
    db: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T], *, immediate: bool = False
) -> T:
    """``fn(db)`` in one transaction, rolled back if it raises. ``immediate`` takes the write lock
    at once (no deadlock upgrading a read lock to a write lock)."""
    db.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
    try:
        value = fn(db)
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    return value


# -- store identity ----------------------------------------------------------------------------------


def id_file(path: Path) -> Path:
    return path.with_name(path.name + ID_SUFFIX)


def check_before_open(path: Path, what: str) -> None:
    """Refuse (InvalidInput) a store whose id file says it existed but whose database is gone or empty."""
    marker = id_file(path)
    if not marker.exists():
        return
    if not path.exists():
        raise InvalidInput(
            f"the {what} {path} is missing, but {marker} says it existed: its contents would be lost "
            f"silently. Restore the file from a backup, or delete {marker} to start with an empty store"
        )
    if path.stat().st_size == 0:
        raise InvalidInput(
            f"the {what} {path} is empty (truncated?), but {marker} says it held data. Restore the "
            f"file from a backup, or delete {marker} to start with an empty store"
        )


def claim(db: sqlite3.Connection, path: Path, what: str) -> None:
    """Check that ``db`` (just opened at ``path``) is intact and is the store its id file names;
    give a new store its id. Raises InvalidInput with the reason and the way out."""
    try:
        problems = [row[0] for row in db.execute("PRAGMA quick_check(5)").fetchall()]
    except sqlite3.DatabaseError as exc:
        raise InvalidInput(f"the {what} {path} cannot be read: {exc}; restore it from a backup") from None
    if problems != ["ok"]:
        raise InvalidInput(
            f"the {what} {path} is corrupt ({'; '.join(problems)}); restore it from a backup, or move it "
            f"and {id_file(path)} away to start with an empty store"
        )
    db.execute("CREATE TABLE IF NOT EXISTS store_identity (id TEXT NOT NULL)")
    row = db.execute("SELECT id FROM store_identity").fetchone()
    marker = id_file(path)
    if marker.exists():
        expected = marker.read_text().strip()
        if row is None or row[0] != expected:
            found = "no id" if row is None else f"id {row[0]}"
            raise InvalidInput(
                f"the {what} {path} is not the store {marker} names (expected id {expected}, found "
                f"{found}): it was replaced or recreated. Restore the right file, or delete {marker} "
                "to adopt this one"
            )
        return
    if row is None:
        store_id = uuid.uuid4().hex
        db.execute("INSERT INTO store_identity (id) VALUES (?)", (store_id,))
    else:
        store_id = str(row[0])
    marker.write_text(store_id + "\n")
