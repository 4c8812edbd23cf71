"""Jobs have owners: the stores keep each job's tenant and list by it (SQLite and PostgreSQL), and a
job database made before jobs had owners gains the column when opened."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from jobs import pg
from tierserve.jobs.job import JobSpec
from tierserve.jobs.store import JobStore, open_store
from tierserve.storage.database import JOBS_FILE as SQLITE_FILE

pytestmark = pytest.mark.anyio

T0 = 1_700_000_000.0


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[JobStore]:
    opened = open_store("" if request.param == "sqlite" else pg.fresh_database(), tmp_path)
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


def spec(tenant: str | None, key: str | None = None) -> JobSpec:
    return JobSpec(
        id=str(uuid.uuid4()),
        model="simple",
        version=None,
        tier="bronze",
        max_attempts=3,
        body=b'{"inputs": []}',
        idempotency_key=None if key is None else (f"{tenant}/{key}" if tenant else key),
        fingerprint="" if key is None else "fp",
        tenant=tenant,
    )


async def test_jobs_keep_their_tenant_and_list_by_it(store: JobStore) -> None:
    jobs = {}
    for tenant in ("acme", "beta", "acme", None):
        job, created = await store.submit(spec(tenant), T0)
        assert created and job.tenant == tenant
        jobs.setdefault(tenant, []).append(job.id)
    acme = await store.list_jobs(status=None, model=None, limit=10, before=None, tenant="acme")
    assert [j.id for j in acme.jobs] == list(reversed(jobs["acme"]))
    everyone = await store.list_jobs(status=None, model=None, limit=10, before=None)
    assert len(everyone.jobs) == 4
    fetched = await store.get(jobs["beta"][0])
    assert fetched is not None and fetched.tenant == "beta"


async def test_idempotency_keys_are_per_tenant(store: JobStore) -> None:
    mine, created = await store.submit(spec("acme", "order-1"), T0)
    theirs, also_created = await store.submit(spec("beta", "order-1"), T0)
    again, replayed = await store.submit(spec("acme", "order-1"), T0)
    assert created and also_created and not replayed
    assert again.id == mine.id != theirs.id
    assert mine.client_idempotency_key == theirs.client_idempotency_key == "order-1"


async def test_an_old_sqlite_job_database_gains_the_tenant_column(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / SQLITE_FILE)
    db.execute(
        "CREATE TABLE jobs (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, "
        "idempotency_key TEXT, fingerprint TEXT NOT NULL, model TEXT NOT NULL, version TEXT, "
        "tier TEXT NOT NULL, status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, "
        "max_attempts INTEGER NOT NULL, created_at REAL NOT NULL, updated_at REAL NOT NULL, "
        "run_at REAL NOT NULL, started_at REAL, finished_at REAL, last_error TEXT, lease_owner TEXT, "
        "lease_token TEXT, expires_at REAL, body BLOB NOT NULL, result BLOB)"
    )
    db.execute(
        "INSERT INTO jobs (id, fingerprint, model, tier, status, max_attempts, created_at, updated_at, "
        "run_at, body) VALUES ('old', '', 'simple', 'bronze', 'queued', 3, 1, 1, 1, x'7b7d')"
    )
    db.commit()
    db.close()
    store = open_store("", tmp_path)
    await store.open()
    try:
        old = await store.get("old")
        assert old is not None and old.tenant is None
        new, _ = await store.submit(spec("acme"), T0)
        assert new.tenant == "acme"
    finally:
        await store.close()
