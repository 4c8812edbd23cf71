"""Making, listing and revoking API keys: shared by ``tierserve keys`` and the admin routes."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from tierserve.errors import InvalidInput, NotFound
from tierserve.security.identity import TENANT_RULE, valid_tenant
from tierserve.security.keys import KeyRecord, new_key
from tierserve.security.rates import NO_LIMITS, Limits
from tierserve.security.records import ADMIN, AuditRecord
from tierserve.security.roles import Role
from tierserve.security.store import SecurityStore

MAX_DESCRIPTION = 500


@dataclass(frozen=True)
class KeySpec:
    tenant: str
    role: Role
    tier: str | None = None
    limits: Limits = NO_LIMITS
    description: str = ""

    @classmethod
    def parse(cls, doc: Mapping[str, Any], tiers: Collection[str]) -> KeySpec:
        """From ``{tenant, role, tier?, rate?, burst?, concurrency?, description?}``; raises InvalidInput."""
        unknown = set(doc) - {"tenant", "role", "tier", "rate", "burst", "concurrency", "description"}
        if unknown:
            raise InvalidInput(f"unknown fields {sorted(unknown)}")
        tenant = doc.get("tenant")
        if not isinstance(tenant, str) or not valid_tenant(tenant):
            raise InvalidInput(f"'tenant' must be {TENANT_RULE}")
        tier = doc.get("tier")
        if tier is not None and (not isinstance(tier, str) or tier not in tiers):
            raise InvalidInput(f"unknown tier {tier!r}; configured tiers: {', '.join(tiers)}")
        description = doc.get("description", "")
        if not isinstance(description, str) or len(description) > MAX_DESCRIPTION:
            raise InvalidInput(f"'description' must be a string of at most {MAX_DESCRIPTION} characters")
        limits = Limits.parse(
            rate=doc.get("rate"), burst=doc.get("burst"), concurrency=doc.get("concurrency")
        )
        return cls(tenant, Role.parse(doc.get("role")), tier, limits, description)


async def create_key(store: SecurityStore, spec: KeySpec, *, actor: str, now: float) -> tuple[KeyRecord, str]:
    """Store a new key; its record and the key itself (to show once: only its hash is kept)."""
    record, secret = new_key(
        tenant=spec.tenant,
        role=spec.role,
        now=now,
        tier=spec.tier,
        limits=spec.limits,
        description=spec.description,
        created_by=actor,
    )
    await store.add_key(record, now)
    return record, secret


async def revoke_key(store: SecurityStore, key_id: str, *, now: float) -> KeyRecord:
    """Revoke a key (revoking twice is not an error); 404 when there is no such key."""
    record = await store.revoke_key(key_id, now)
    if record is None:
        raise NotFound(f"unknown API key '{key_id}'")
    return record


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
