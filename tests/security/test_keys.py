"""API keys: random, prefixed, stored only as their SHA-256."""

from __future__ import annotations

import base64
import hashlib

from tierserve.security.keys import KEY_PREFIX, hash_key, new_key, new_secret
from tierserve.security.rates import Limits
from tierserve.security.roles import Role


def test_a_secret_is_32_random_bytes_behind_the_prefix() -> None:
    secret = new_secret()
    assert secret.startswith(KEY_PREFIX)
    raw = base64.urlsafe_b64decode(secret.removeprefix(KEY_PREFIX) + "=")
    assert len(raw) == 32
    assert len({new_secret() for _ in range(1000)}) == 1000


def test_the_hash_is_the_sha256_of_the_whole_key() -> None:
    assert hash_key("tsk_abc") == hashlib.sha256(b"tsk_abc").hexdigest()
    assert hash_key("tsk_abc") != hash_key("tsk_abd")


def test_a_new_key_keeps_only_the_hash_and_carries_its_identity() -> None:
    limits = Limits.parse(rate="5/s", concurrency=2)
    record, secret = new_key(tenant="acme", role=Role.USER, now=100.0, tier="gold", limits=limits)
    assert record.key_hash == hash_key(secret)
    assert secret not in repr(record) and secret not in str(record.describe())
    assert "key_hash" not in record.describe()
    identity = record.identity()
    assert (identity.key_id, identity.tenant, identity.role, identity.tier) == (
        record.id,
        "acme",
        Role.USER,
        "gold",
    )
    assert identity.limits == limits
    assert identity.tenant_scope == "acme"


def test_revoking_keeps_the_record() -> None:
    record, _ = new_key(tenant="acme", role=Role.ADMIN, now=1.0)
    revoked = record.revoked(2.0)
    assert revoked.revoked_at == 2.0 and revoked.id == record.id
    assert record.identity().tenant_scope is None  # admins act across tenants
