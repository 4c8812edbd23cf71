"""The audit log's queue: inference records never wait and are dropped (and counted) when full;
admin actions are stored before the caller goes on."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from prometheus_client import CollectorRegistry

from tierserve.security.audit_log import AuditLog
from tierserve.security.audit_records import ADMIN, INFERENCE, AuditQuery, AuditRecord

pytestmark = pytest.mark.anyio


class FakeStore:
    """Keeps appended batches; fails while ``broken``."""

    def __init__(self) -> None:
        self.batches: list[list[AuditRecord]] = []
        self.broken = False

    async def append(self, records: Sequence[AuditRecord]) -> None:
        if self.broken:
            raise OSError("disk full")
        self.batches.append(list(records))

    async def audit(self, query: AuditQuery) -> list[AuditRecord]:
        return [r for batch in self.batches for r in batch]


def record(n: int, kind: str = INFERENCE) -> AuditRecord:
    return AuditRecord(at=float(n), kind=kind, action="infer", key_id="k", tenant="t", status=200)


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def test_records_wait_in_the_queue_and_are_flushed_in_batches() -> None:
    store, registry = FakeStore(), CollectorRegistry()
    log = AuditLog(store, registry, max_queue=100)  # type: ignore[arg-type]
    for n in range(5):
        log.record(record(n))
    assert store.batches == []  # nothing written on the request's path
    assert sample(registry, "tierserve_audit_queue_depth") == 5
    await log.flush()
    assert [r.at for r in store.batches[0]] == [0, 1, 2, 3, 4]
    assert sample(registry, "tierserve_audit_records_total", kind=INFERENCE) == 5


async def test_a_full_queue_drops_and_counts() -> None:
    store, registry = FakeStore(), CollectorRegistry()
    log = AuditLog(store, registry, max_queue=3)  # type: ignore[arg-type]
    for n in range(5):
        log.record(record(n))
    assert sample(registry, "tierserve_audit_dropped_total") == 2
    await log.flush()
    assert [r.at for r in store.batches[0]] == [0, 1, 2]


async def test_a_failing_store_drops_the_batch_and_counts_it() -> None:
    store, registry = FakeStore(), CollectorRegistry()
    log = AuditLog(store, registry)  # type: ignore[arg-type]
    log.record(record(1))
    store.broken = True
    await log.flush()
    assert sample(registry, "tierserve_audit_dropped_total") == 1


async def test_admin_actions_are_written_at_once_and_errors_reach_the_caller() -> None:
    store, registry = FakeStore(), CollectorRegistry()
    log = AuditLog(store, registry)  # type: ignore[arg-type]
    await log.write(record(1, ADMIN))
    assert store.batches == [[record(1, ADMIN)]]
    store.broken = True
    with pytest.raises(OSError, match="disk full"):
        await log.write(record(2, ADMIN))


async def test_stop_flushes_what_is_left() -> None:
    store, registry = FakeStore(), CollectorRegistry()
    log = AuditLog(store, registry, flush_interval_s=60)  # type: ignore[arg-type]
    log.start()
    log.record(record(7))
    await log.stop()
    assert store.batches == [[record(7)]]
