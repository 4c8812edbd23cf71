"""Column lists and row decoding shared by the SQL stores."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tierserve.jobs.job import Job
from tierserve.jobs.states import JobStatus

SUMMARY_COLUMNS = (
    "seq, id, model, version, tier, status, attempts, max_attempts, created_at, updated_at, run_at, "
    "started_at, finished_at, last_error, idempotency_key, fingerprint, lease_token, expires_at, tenant, "
    "priority, time_limit_s"
)
_SUMMARY_COUNT = SUMMARY_COLUMNS.count(",") + 1
WITH_BODY = SUMMARY_COLUMNS + ", body"
WITH_RESULT = SUMMARY_COLUMNS + ", result"


def job_from_row(row: Sequence[Any], *, body: bool = False, result: bool = False) -> Job:
    """A ``Job`` from a row of ``SUMMARY_COLUMNS`` optionally followed by ``body`` or ``result``."""
    extra = row[_SUMMARY_COUNT] if len(row) > _SUMMARY_COUNT else None
    return Job(
        seq=int(row[0]),
        id=row[1],
        model=row[2],
        version=row[3],
        tier=row[4],
        status=JobStatus(row[5]),
        attempts=int(row[6]),
        max_attempts=int(row[7]),
        created_at=float(row[8]),
        updated_at=float(row[9]),
        run_at=float(row[10]),
        started_at=_float(row[11]),
        finished_at=_float(row[12]),
        last_error=row[13],
        idempotency_key=row[14],
        fingerprint=row[15],
        lease_token=row[16],
        expires_at=_float(row[17]),
        tenant=row[18],
        priority=int(row[19]),
        time_limit_s=_float(row[20]),
        body=bytes(extra) if body and extra is not None else None,
        result=bytes(extra) if result and extra is not None else None,
    )


def _float(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]
