"""The security store contract, on SQLite and on a real PostgreSQL: keys, their changes, the
append-only audit log and its filters."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from jobs import pg
from tierserve.security.audit_records import ADMIN, INFERENCE, AuditQuery, AuditRecord
from tierserve.security.keys import new_key
from tierserve.security.rates import Limits
from tierserve.security.roles import Role
from tierserve.security.store import SQLITE_FILE, SecurityStore, open_security_store

pytestmark = pytest.mark.anyio

T0 = 1_700_000_000.0


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SecurityStore]:
    database = "" if request.param == "sqlite" else pg.fresh_database()
    opened = open_security_store(database, tmp_path)
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


async def test_keys_round_trip_without_their_secret(store: SecurityStore) -> None:
    limits = Limits.parse(rate="50/s", burst=100, concurrency=4)
    record, secret = new_key(
        tenant="acme",
        role=Role.USER,
        now=T0,
        tier="gold",
        limits=limits,
        description="ci",
        created_by="cli:me",
    )
    await store.add_key(record, T0)
    (loaded,) = await store.keys(include_revoked=False)
    assert loaded == record
    assert secret not in str(loaded)


async def test_revoking_changes_the_version_and_hides_the_key(store: SecurityStore) -> None:
    first, _ = new_key(tenant="a", role=Role.ADMIN, now=T0)
    second, _ = new_key(tenant="b", role=Role.READER, now=T0 + 1)
    empty = await store.keys_version()
    await store.add_key(first, T0)
    one = await store.keys_version()
    await store.add_key(second, T0 + 1)
    two = await store.keys_version()
    assert len({empty, one, two}) == 3
    revoked = await store.revoke_key(first.id, T0 + 2)
    assert revoked is not None and revoked.revoked_at == T0 + 2
    assert await store.keys_version() != two
    assert [k.id for k in await store.keys(include_revoked=False)] == [second.id]
    assert [k.id for k in await store.keys(include_revoked=True)] == [first.id, second.id]
    again = await store.revoke_key(first.id, T0 + 9)
    assert again is not None and again.revoked_at == T0 + 2  # revoking twice keeps the first time
    assert await store.revoke_key("no-such-key", T0) is None


def audit(at: float, **kw: object) -> AuditRecord:
    values: dict[str, object] = {
        "at": at,
        "kind": INFERENCE,
        "action": "infer",
        "key_id": "k1",
        "tenant": "acme",
        "status": 200,
        "model": "simple",
        "version": "1",
        "tier": "gold",
        "latency_ms": 1.5,
        "pool": "cpu",
        "cost": 0.25,
    }
    values.update(kw)
    return AuditRecord(**values)  # type: ignore[arg-type]


async def test_audit_records_are_newest_first_and_filtered(store: SecurityStore) -> None:
    await store.append(
        [
            audit(T0),
            audit(T0 + 1, tenant="other"),
            audit(T0 + 2, kind=ADMIN, action="keys.create", target="abc", model=None, status=201),
            audit(T0 + 3),
        ]
    )
    everything = await store.audit(AuditQuery())
    assert [r.at for r in everything] == [T0 + 3, T0 + 2, T0 + 1, T0]
    assert everything[0].seq is not None and everything[0].seq > everything[-1].seq  # type: ignore[operator]
    stored = everything[-1]
    assert stored == audit(T0, seq=stored.seq)
    assert [r.at for r in await store.audit(AuditQuery(tenant="other"))] == [T0 + 1]
    assert [r.target for r in await store.audit(AuditQuery(action="keys.create"))] == ["abc"]
    assert [r.at for r in await store.audit(AuditQuery(kind=INFERENCE, since=T0 + 1, until=T0 + 3))] == [
        T0 + 1
    ]
    page = await store.audit(AuditQuery(limit=2))
    assert len(page) == 3  # one more than the limit: there is a next page
    rest = await store.audit(AuditQuery(limit=2, before=page[1].seq))
    assert [r.at for r in rest] == [T0 + 1, T0]


async def test_the_audit_log_is_append_only(tmp_path: Path) -> None:
    store = open_security_store("", tmp_path)
    await store.open()
    await store.append([audit(T0)])
    await store.close()
    db = sqlite3.connect(tmp_path / SQLITE_FILE)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        db.execute("UPDATE audit_log SET status = 500")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        db.execute("DELETE FROM audit_log")
    db.close()


async def test_the_postgresql_audit_log_is_append_only() -> None:
    import psycopg

    dsn = pg.fresh_database()
    store = open_security_store(dsn, Path("unused"))
    await store.open()
    await store.append([audit(T0)])
    await store.close()
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in ("UPDATE audit_log SET status = 500", "DELETE FROM audit_log"):
            with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
                conn.execute(statement)


def test_sqlite_keeps_security_beside_the_jobs(tmp_path: Path) -> None:
    assert open_security_store("", tmp_path).path == tmp_path / SQLITE_FILE  # type: ignore[attr-defined]
    named = open_security_store(f"sqlite:///{tmp_path}/x/jobs-a.db", Path("unused"))
    assert named.path == tmp_path / "x" / SQLITE_FILE  # type: ignore[attr-defined]


async def test_retention_deletes_only_records_older_than_its_cut_off(store: SecurityStore) -> None:
    await store.append([audit(T0), audit(T0 + 10), audit(T0 + 20)])
    assert await store.purge_audit(T0 + 10) == 1
    assert [r.at for r in await store.audit(AuditQuery())] == [T0 + 20, T0 + 10]
    assert await store.purge_audit(T0 + 10) == 0


async def test_stored_audit_text_is_bounded(store: SecurityStore) -> None:
    from tierserve.security.audit_records import MAX_DETAIL, MAX_TEXT

    # A refused call naming a 30,000-character model grew the log by 40 KB per call.
    await store.append([audit(T0, model="m" * 30_000, target="t" * 30_000, detail="d" * 30_000)])
    (stored,) = await store.audit(AuditQuery())
    assert stored.model is not None and len(stored.model) <= MAX_TEXT and "30000 chars" in stored.model
    assert stored.target is not None and len(stored.target) <= MAX_TEXT
    assert stored.detail is not None and len(stored.detail) <= MAX_DETAIL
