"""The one SQLite set-up: WAL, synchronous=NORMAL, a busy timeout, the fail-closed identity, and
transactions that roll back whole."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tierserve.errors import InvalidInput
from tierserve.storage.sqlite import SqliteOnThread, connect, id_file, in_transaction

pytestmark = pytest.mark.anyio


def test_every_connection_is_wal_normal_autocommit_with_a_busy_timeout(tmp_path: Path) -> None:
    db = connect(tmp_path / "deep" / "x.db", "test database", busy_timeout_s=2.5)
    try:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert db.execute("PRAGMA synchronous").fetchone() == (1,)  # NORMAL
        assert db.execute("PRAGMA busy_timeout").fetchone() == (2500,)
        assert db.isolation_level is None and not db.in_transaction
    finally:
        db.close()


def test_a_store_with_an_identity_refuses_a_replaced_or_emptied_file(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    connect(path, "job database", identity=True).close()
    assert id_file(path).exists()
    connect(path, "job database", identity=True).close()  # the same store again: fine
    path.write_bytes(b"")
    with pytest.raises(InvalidInput, match=r"job database .* is empty"):
        connect(path, "job database", identity=True)
    path.unlink()
    connect(path, "job database").close()  # a fresh file, made without the identity check
    with pytest.raises(InvalidInput, match="is not the store"):
        connect(path, "job database", identity=True)


def test_an_unusable_path_is_an_input_error_naming_the_store(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(InvalidInput, match="cannot open the rollout database"):
        connect(tmp_path / "file" / "x.db", "rollout database")


def test_a_transaction_is_all_or_nothing(tmp_path: Path) -> None:
    db = connect(tmp_path / "x.db", "test database")
    db.execute("CREATE TABLE t (v INTEGER UNIQUE)")

    def two(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO t VALUES (1)")
        conn.execute("INSERT INTO t VALUES (1)")

    with pytest.raises(sqlite3.IntegrityError):
        in_transaction(db, two, immediate=True)
    assert db.execute("SELECT count(*) FROM t").fetchone() == (0,)
    assert in_transaction(db, lambda conn: conn.execute("INSERT INTO t VALUES (2)").rowcount) == 1
    assert not db.in_transaction
    db.close()


async def test_a_connection_on_its_own_thread_runs_the_schema_and_closes(tmp_path: Path) -> None:
    store = SqliteOnThread(
        tmp_path / "r.db", ["CREATE TABLE IF NOT EXISTS r (v INTEGER)"], "rollout database"
    )
    with pytest.raises(RuntimeError, match="rollout database is not open"):
        await store.run(lambda: None)
    await store.open()
    await store.run(store.transaction, lambda db: db.execute("INSERT INTO r VALUES (7)"))
    assert await store.run(lambda: store.conn.execute("SELECT v FROM r").fetchall()) == [(7,)]
    await store.close()
    await store.close()  # twice is fine
