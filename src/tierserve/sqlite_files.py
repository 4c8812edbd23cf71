"""Embedded SQLite stores that fail closed: a store file that is missing, truncated or corrupt stops
the server at start with the reason, instead of being silently replaced by an empty one.

SQLite creates a fresh, empty database wherever its file is missing or empty. For the job store that
meant accepted jobs silently lost; for the security store, a server that came up with no keys, and so
with authentication off. So each store has an identity: a random id kept both in the database (table
``store_identity``) and in a small file beside it (``<file>.id``). At open:

- the id file exists, but the database is missing, empty, or holds another id -> refuse to start,
  saying how to restore the file or (deliberately) start afresh by deleting the id file;
- the database fails SQLite's ``quick_check`` (corrupt pages) -> refuse to start;
- neither exists (a new store) -> create both; a store made before ids existed gets one.
"""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

from tierserve.errors import InvalidInput

ID_SUFFIX = ".id"


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
