"""API keys: made from 32 random bytes, shown once, stored only as their SHA-256.

Why SHA-256 and not a slow password hash (bcrypt, scrypt, Argon2): slow hashes exist to make
guessing low-entropy passwords expensive. A key here is 256 random bits; no amount of hashing
speed makes guessing one feasible, and a leaked table of SHA-256 digests reveals nothing usable.
A fast hash lets every request look its key up in a dict in well under a microsecond, where a
slow hash would cost tens of milliseconds per request.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from typing import Any

from tierserve.errors import InvalidInput
from tierserve.security.identity import TENANT_RULE, Identity, valid_tenant
from tierserve.security.rates import NO_LIMITS, Limits
from tierserve.security.roles import Role

KEY_PREFIX = "tsk_"  # "tierserve key": tells a key from a JWT, and makes leaked keys easy to grep for
_SECRET_BYTES = 32


def new_secret() -> str:
    return KEY_PREFIX + base64.urlsafe_b64encode(secrets.token_bytes(_SECRET_BYTES)).rstrip(b"=").decode()


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class KeyRecord:
    """A stored key: everything but the key itself."""

    id: str
    key_hash: str
    tenant: str
    role: Role
    created_at: float
    tier: str | None = None
    limits: Limits = NO_LIMITS
    description: str = ""
    revoked_at: float | None = None
    created_by: str = ""

    def identity(self) -> Identity:
        return Identity(self.id, self.tenant, self.role, self.tier, self.limits)

    def describe(self) -> dict[str, Any]:
        """The public view (no hash)."""
        return {
            "id": self.id,
            "tenant": self.tenant,
            "role": str(self.role),
            "tier": self.tier,
            **self.limits.describe(),
            "description": self.description,
            "created_at": self.created_at,
            "created_by": self.created_by,
            "revoked_at": self.revoked_at,
        }

    def revoked(self, now: float) -> KeyRecord:
        return replace(self, revoked_at=now)


def new_key(
    *,
    tenant: str,
    role: Role,
    now: float,
    tier: str | None = None,
    limits: Limits = NO_LIMITS,
    description: str = "",
    created_by: str = "",
) -> tuple[KeyRecord, str]:
    """A fresh key record and the key itself (to show once; only its hash is kept)."""
    secret = new_secret()
    record = KeyRecord(
        id=secrets.token_hex(8),
        key_hash=hash_key(secret),
        tenant=tenant,
        role=role,
        created_at=now,
        tier=tier,
        limits=limits,
        description=description,
        created_by=created_by,
    )
    return record, secret


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
