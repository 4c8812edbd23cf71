"""Collections' metadata in SQLite (WAL): the collections, and per item its id, slot, metadata and
text. This is the source of truth: an upsert is acknowledged once its one transaction commits, and
a restart rebuilds everything else (filter columns, the graph's live set) from it.

Durability: ``synchronous=NORMAL`` in WAL mode writes every commit into the log before it returns;
the OS holds it, so a killed process (SIGKILL) loses nothing it acknowledged. A power cut may lose
the last commits (``synchronous=FULL`` would close that at the cost of an fsync per write).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tierserve.errors import Conflict
from tierserve.storage.sqlite import connect

_SCHEMA = """
CREATE TABLE IF NOT EXISTS collections (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: files and rows of a dropped one stay apart
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    dimension INTEGER NOT NULL,
    metric TEXT NOT NULL,
    precision TEXT NOT NULL,
    model TEXT,
    next_slot INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    UNIQUE (tenant, name)
);
CREATE TABLE IF NOT EXISTS items (
    collection INTEGER NOT NULL,
    key TEXT NOT NULL,
    slot INTEGER NOT NULL,
    metadata TEXT,
    text TEXT,
    PRIMARY KEY (collection, key)
);
CREATE UNIQUE INDEX IF NOT EXISTS items_slot ON items (collection, slot);
"""


@dataclass(frozen=True)
class CollectionRecord:
    id: int
    tenant: str
    name: str
    dimension: int
    metric: str
    precision: str
    model: str | None
    next_slot: int
    created_at: float


@dataclass(frozen=True)
class ItemRow:
    key: str
    slot: int
    metadata: str | None  # JSON
    text: str | None


_COLUMNS = "id, tenant, name, dimension, metric, precision, model, next_slot, created_at"


class CollectionStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._local = threading.local()
        self._write = threading.Lock()  # one writer; readers never wait (WAL)
        with self._connect() as db:
            db.executescript(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        return connect(self.path, "collection database", busy_timeout_s=30.0)

    @property
    def _db(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = self._connect()
        return db

    # -- collections -----------------------------------------------------------------------------

    def create(
        self, tenant: str, name: str, dimension: int, metric: str, precision: str, model: str | None
    ) -> CollectionRecord:
        with self._write:
            try:
                cursor = self._db.execute(
                    "INSERT INTO collections (tenant, name, dimension, metric, precision, model, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (tenant, name, dimension, metric, precision, model, time.time()),
                )
            except sqlite3.IntegrityError:
                raise Conflict(f"collection '{name}' already exists") from None
        record = self.find(tenant, name)
        assert record is not None and record.id == cursor.lastrowid
        return record

    def find(self, tenant: str, name: str) -> CollectionRecord | None:
        row = self._db.execute(
            f"SELECT {_COLUMNS} FROM collections WHERE tenant = ? AND name = ?", (tenant, name)
        ).fetchone()
        return CollectionRecord(*row) if row else None

    def collections(self, tenant: str | None = None) -> list[CollectionRecord]:
        if tenant is None:
            rows = self._db.execute(f"SELECT {_COLUMNS} FROM collections ORDER BY id").fetchall()
        else:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM collections WHERE tenant = ? ORDER BY name", (tenant,)
            ).fetchall()
        return [CollectionRecord(*row) for row in rows]

    def count_for(self, tenant: str) -> int:
        row = self._db.execute("SELECT count(*) FROM collections WHERE tenant = ?", (tenant,)).fetchone()
        return int(row[0])

    def drop(self, collection: int) -> None:
        with self._write, self._transaction() as db:
            db.execute("DELETE FROM items WHERE collection = ?", (collection,))
            db.execute("DELETE FROM collections WHERE id = ?", (collection,))

    # -- items -----------------------------------------------------------------------------------

    def upsert(self, collection: int, rows: list[ItemRow], next_slot: int) -> list[int]:
        """Write ``rows`` in one transaction; the slots they replace (to drop from the graph)."""
        keys = [row.key for row in rows]
        with self._write, self._transaction() as db:
            replaced = self._slots_of(db, collection, keys)
            db.executemany(
                "INSERT INTO items (collection, key, slot, metadata, text) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (collection, key) DO UPDATE SET slot = excluded.slot, "
                "metadata = excluded.metadata, text = excluded.text",
                [(collection, r.key, r.slot, r.metadata, r.text) for r in rows],
            )
            db.execute("UPDATE collections SET next_slot = ? WHERE id = ?", (next_slot, collection))
        return replaced

    def delete(self, collection: int, keys: list[str]) -> list[int]:
        """Delete these ids in one transaction; the slots they held."""
        with self._write, self._transaction() as db:
            slots = self._slots_of(db, collection, keys)
            for chunk in _chunks(keys):
                marks = ",".join("?" * len(chunk))
                db.execute(
                    f"DELETE FROM items WHERE collection = ? AND key IN ({marks})", (collection, *chunk)
                )
        return slots

    def _slots_of(self, db: sqlite3.Connection, collection: int, keys: list[str]) -> list[int]:
        slots: list[int] = []
        for chunk in _chunks(keys):
            marks = ",".join("?" * len(chunk))
            slots += [
                int(r[0])
                for r in db.execute(
                    f"SELECT slot FROM items WHERE collection = ? AND key IN ({marks})", (collection, *chunk)
                )
            ]
        return slots

    def by_keys(self, collection: int, keys: list[str]) -> list[ItemRow]:
        rows: list[ItemRow] = []
        for chunk in _chunks(keys):
            marks = ",".join("?" * len(chunk))
            rows += [
                ItemRow(*r)
                for r in self._db.execute(
                    f"SELECT key, slot, metadata, text FROM items WHERE collection = ? AND key IN ({marks})",
                    (collection, *chunk),
                )
            ]
        return rows

    def by_slots(self, collection: int, slots: list[int]) -> dict[int, ItemRow]:
        found: dict[int, ItemRow] = {}
        for chunk in _chunks(slots):
            marks = ",".join("?" * len(chunk))
            for r in self._db.execute(
                f"SELECT key, slot, metadata, text FROM items WHERE collection = ? AND slot IN ({marks})",
                (collection, *chunk),
            ):
                found[int(r[1])] = ItemRow(*r)
        return found

    def live(self, collection: int) -> Iterator[tuple[str, int, str | None]]:
        """Every item's id, slot and metadata (for rebuilding the in-memory state at load)."""
        db = self._connect()  # its own connection: a long read beside this thread's other work
        try:
            yield from db.execute("SELECT key, slot, metadata FROM items WHERE collection = ?", (collection,))
        finally:
            db.close()

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")


def _chunks(values: list[str] | list[int], size: int = 500) -> Iterator[list[str] | list[int]]:
    for i in range(0, len(values), size):
        yield values[i : i + size]
