"""Making and revoking API keys in the security store (runtime: it writes), shared by
``tierserve keys`` and the admin routes. What a key is, and the parsed request for one
(``KeySpec``), are pure and live in ``keys``."""

from __future__ import annotations

from tierserve.errors import NotFound
from tierserve.security.keys import KeyRecord, KeySpec, new_key
from tierserve.security.store import SecurityStore


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
