"""One guarded call, whatever the protocol: the note its check fills in, slots given back and the
inference audit record queued with the answer's status, on success and on error alike."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from tierserve.engine.request import Decision
from tierserve.errors import RateLimited
from tierserve.scheduler.tiers import TierTable
from tierserve.security.audit_log import AuditLog
from tierserve.security.audit_records import INFERENCE
from tierserve.security.guard import Guard
from tierserve.security.keys import new_key
from tierserve.security.rate_limiter import MemoryLimiter
from tierserve.security.rates import Limits
from tierserve.security.roles import Role
from tierserve.security.service import SecurityService

pytestmark = pytest.mark.anyio


def service() -> tuple[SecurityService, str]:
    record, secret = new_key(tenant="acme", role=Role.USER, now=0.0, limits=Limits.parse(concurrency=1))
    guard = Guard(MemoryLimiter())
    guard.load_keys([record])
    audit = AuditLog(None, CollectorRegistry())  # type: ignore[arg-type]  # records stay queued
    return SecurityService(None, guard, audit, TierTable.from_config({}), clock=lambda: 7.0), secret  # type: ignore[arg-type]


async def admit(security: SecurityService, secret: str, note: object) -> None:
    identity = security.guard.authenticate(f"Bearer {secret}", None)
    note.identity, note.action = identity, "infer"  # type: ignore[attr-defined]
    await security.guard.admit(identity, note, holds_work=True)  # type: ignore[arg-type]


async def test_a_call_gives_its_slot_back_and_is_audited_with_its_status() -> None:
    security, secret = service()
    async with security.call(model="simple", version="1") as note:
        await admit(security, secret, note)
        assert note.slots  # the key's only concurrency slot is held while the call runs
        note.decision = Decision("simple", 1, "gold", "cpu", 0.5)  # what the engine decided
        note.status = 200
    assert not note.slots
    async with security.call(model="simple") as second:  # the slot is free again
        await admit(security, secret, second)
        second.status = 200
    first = security.audit._queue[0]
    assert note.identity is not None
    assert (first.kind, first.action, first.key_id, first.tenant) == (
        INFERENCE,
        "infer",
        note.identity.key_id,
        "acme",
    )
    assert (first.status, first.model, first.version, first.tier) == (200, "simple", "1", "gold")
    assert (first.pool, first.cost) == ("cpu", 0.5)
    assert (security.audit._queue[1].model, security.audit._queue[1].tier) == ("simple", None)  # none handed
    assert first.at == 7.0


async def test_a_failed_call_is_audited_with_the_errors_status_and_still_frees_its_slot() -> None:
    security, secret = service()
    with pytest.raises(RateLimited):
        async with security.call(model="simple") as note:
            await admit(security, secret, note)
            raise RateLimited("over the tenant's rate")
    assert not note.slots
    assert [r.status for r in security.audit._queue] == [429]
