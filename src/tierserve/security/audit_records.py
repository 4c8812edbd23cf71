"""What the security store keeps besides keys: audit records, and how they are queried."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

ADMIN = "admin"
INFERENCE = "inference"


@dataclass(frozen=True)
class AuditRecord:
    """One admin action (who, what, when, result) or one inference's metadata (never its payload)."""

    at: float  # wall clock, seconds
    kind: str  # ADMIN or INFERENCE
    action: str  # e.g. keys.create, keys.revoke, model.load, model.unload, jobs.requeue, infer
    key_id: str  # who: an API key id, "jwt:<sub>", "anonymous" (auth off) or "cli:<user>"
    tenant: str | None
    status: int  # the HTTP status of the answer
    target: str | None = None  # what it acted on: a key id, a model, a job id
    detail: str | None = None  # an error message, or what changed
    model: str | None = None
    version: str | None = None
    tier: str | None = None
    latency_ms: float | None = None
    pool: str | None = None
    cost: float | None = None
    seq: int | None = None  # the store's order (the page cursor); None until stored

    def describe(self) -> dict[str, Any]:
        return asdict(self)


COLUMNS = (
    "at", "kind", "action", "key_id", "tenant", "status", "target", "detail",
    "model", "version", "tier", "latency_ms", "pool", "cost",
)  # fmt: skip


# Text fields are stored at most this long: a refused call naming a 30,000-character model grew the
# log by 40 KB per call (78 MB in 3 s from a reader key). Enough to identify anything real.
MAX_TEXT = 256
MAX_DETAIL = 1024


def _bounded(value: Any, limit: int) -> Any:
    if isinstance(value, str) and len(value) > limit:
        return f"{value[: limit - 20]}...[{len(value)} chars]"
    return value


def record_row(record: AuditRecord) -> tuple[Any, ...]:
    """The stored row: text fields cut to ``MAX_TEXT`` (``detail``: ``MAX_DETAIL``) characters."""
    limits = {column: MAX_DETAIL if column == "detail" else MAX_TEXT for column in COLUMNS}
    return tuple(_bounded(getattr(record, column), limits[column]) for column in COLUMNS)


def record_from_row(row: tuple[Any, ...]) -> AuditRecord:
    """From ``seq, *COLUMNS``."""
    return AuditRecord(**dict(zip(COLUMNS, row[1:], strict=True)), seq=int(row[0]))


@dataclass(frozen=True)
class AuditQuery:
    since: float | None = None
    until: float | None = None
    tenant: str | None = None
    action: str | None = None
    kind: str | None = None
    limit: int = 100
    before: int | None = None  # the next_cursor of the previous page

    def where(self, placeholder: str) -> tuple[str, list[Any]]:
        """A WHERE clause (or "") and its parameters, for either store's placeholder style."""
        clauses: list[str] = []
        params: list[Any] = []
        for clause, value in (
            ("at >= {}", self.since),
            ("at < {}", self.until),
            ("tenant = {}", self.tenant),
            ("action = {}", self.action),
            ("kind = {}", self.kind),
            ("seq < {}", self.before),
        ):
            if value is not None:
                clauses.append(clause.format(placeholder))
                params.append(value)
        return (f"WHERE {' AND '.join(clauses)}" if clauses else ""), params


def admin_record(
    action: str,
    *,
    actor: str,
    tenant: str | None,
    status: int,
    now: float,
    target: str | None = None,
    detail: str | None = None,
) -> AuditRecord:
    return AuditRecord(
        at=now,
        kind=ADMIN,
        action=action,
        key_id=actor,
        tenant=tenant,
        status=status,
        target=target,
        detail=detail,
    )
