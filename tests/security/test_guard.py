"""The guard: when authentication is on, credentials to identities, roles, rate and concurrency."""

from __future__ import annotations

import time

import pytest

from security.tokens import SECRET, hs256
from tierserve.errors import Forbidden, RateLimited, Unauthorized
from tierserve.security.guard import Guard, RequestNote, auth_required, is_loopback
from tierserve.security.keys import KeyRecord, new_key
from tierserve.security.rate_limiter import MemoryLimiter
from tierserve.security.rates import Limits
from tierserve.security.roles import Role
from tierserve.security.tokens import JwtSettings, TokenVerifier


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.3.2.1", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.5", False),
        ("example.com", False),
    ],
)
def test_loopback_addresses(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize(
    ("loopback", "insecure", "keys", "tokens", "required"),
    [
        (True, False, 0, False, False),  # a laptop: open, and the log says so
        (False, False, 0, False, True),  # exposed: closed even with no key yet
        (False, True, 0, False, False),  # exposed and told --insecure
        (True, False, 1, False, True),  # any key closes it
        (False, True, 1, False, True),  # --insecure does not override keys
        (True, False, 0, True, True),  # JWT verification configured
    ],
)
def test_when_authentication_is_required(
    loopback: bool, insecure: bool, keys: int, tokens: bool, required: bool
) -> None:
    assert auth_required(loopback=loopback, insecure=insecure, keys=keys, tokens=tokens) is required


def make_guard(*records: KeyRecord, **kw: object) -> Guard:
    guard = Guard(MemoryLimiter(), **kw)  # type: ignore[arg-type]
    guard.load_keys(records)
    return guard


def test_keys_turn_authentication_on_and_revocation_takes_them_away() -> None:
    record, secret = new_key(tenant="acme", role=Role.USER, now=0.0)
    guard = make_guard()
    assert not guard.enabled
    guard.load_keys([record])
    assert guard.enabled
    assert guard.authenticate(f"Bearer {secret}", None).key_id == record.id
    assert guard.authenticate(None, secret).key_id == record.id
    assert guard.authenticate(f"bearer   {secret} ", None).key_id == record.id
    guard.load_keys([record.revoked(1.0)])
    with pytest.raises(Unauthorized, match="unknown or revoked"):
        guard.authenticate(f"Bearer {secret}", None)


@pytest.mark.parametrize(
    ("authorization", "api_key", "message"),
    [
        (None, None, "credentials required"),
        ("Basic dXNlcjpwYXNz", None, "must be 'Bearer"),
        ("Bearer", None, "must be 'Bearer"),
        ("Bearer tsk_not-a-key", None, "unknown or revoked"),
        (None, "garbage", "unknown or revoked"),
        ("Bearer a.b.c", None, "unknown or revoked"),  # looks like a JWT, but none are accepted
    ],
)
def test_bad_credentials(authorization: str | None, api_key: str | None, message: str) -> None:
    record, _ = new_key(tenant="acme", role=Role.USER, now=0.0)
    guard = make_guard(record)
    with pytest.raises(Unauthorized, match=message) as caught:
        guard.authenticate(authorization, api_key)
    assert caught.value.status_code == 401
    assert caught.value.headers() == {"WWW-Authenticate": 'Bearer realm="tierserve"'}


def test_jwts_are_accepted_beside_keys() -> None:
    guard = make_guard(verifier=TokenVerifier(JwtSettings(secret=SECRET, audience="tierserve")))
    assert guard.enabled  # JWT settings alone close the server
    identity = guard.authenticate(f"Bearer {hs256(role='operator')}", None)
    assert (identity.key_id, identity.role) == ("jwt:svc-1", Role.OPERATOR)


def test_a_weaker_role_is_forbidden() -> None:
    record, _ = new_key(tenant="acme", role=Role.USER, now=0.0)
    identity = record.identity()
    Guard.authorize(identity, Role.READER)
    Guard.authorize(identity, Role.USER)
    with pytest.raises(Forbidden, match="needs the role 'operator'") as caught:
        Guard.authorize(identity, Role.OPERATOR)
    assert caught.value.status_code == 403


@pytest.mark.anyio
async def test_a_keys_rate_admits_its_burst_then_429_with_retry_after() -> None:
    record, _ = new_key(tenant="acme", role=Role.USER, now=0.0, limits=Limits.parse(rate="3/min"))
    guard = make_guard(record)
    identity = record.identity()
    for _ in range(3):
        await guard.admit(identity, None, holds_work=False)
    with pytest.raises(RateLimited, match="rate limit of key") as caught:
        await guard.admit(identity, None, holds_work=False)
    assert caught.value.status_code == 429
    assert 1 <= int(caught.value.headers()["Retry-After"]) <= 60  # when the window's oldest hit ages out
    other, _ = new_key(tenant="acme", role=Role.USER, now=0.0, limits=Limits.parse(rate="3/min"))
    await guard.admit(other.identity(), None, holds_work=False)  # every key has its own window


@pytest.mark.anyio
async def test_a_tenants_rate_holds_across_its_keys() -> None:
    keys = [new_key(tenant="acme", role=Role.USER, now=0.0)[0] for _ in range(3)]
    outsider, _ = new_key(tenant="other", role=Role.USER, now=0.0)
    guard = make_guard(*keys, outsider, tenants={"acme": Limits.parse(rate="4/min")})
    for record in keys + keys[:1]:
        await guard.admit(record.identity(), None, holds_work=False)
    with pytest.raises(RateLimited, match="tenant 'acme'"):
        await guard.admit(keys[1].identity(), None, holds_work=False)
    for _ in range(10):
        await guard.admit(outsider.identity(), None, holds_work=False)  # no limit for 'other'


@pytest.mark.anyio
async def test_the_default_tenant_limit_applies_to_tenants_without_their_own() -> None:
    record, _ = new_key(tenant="anyone", role=Role.USER, now=0.0)
    guard = make_guard(record, tenants={"*": Limits.parse(rate="1/min")})
    await guard.admit(record.identity(), None, holds_work=False)
    with pytest.raises(RateLimited):
        await guard.admit(record.identity(), None, holds_work=False)


@pytest.mark.anyio
async def test_concurrency_slots_are_held_until_released() -> None:
    record, _ = new_key(tenant="acme", role=Role.USER, now=0.0, limits=Limits.parse(concurrency=2))
    guard = make_guard(record)
    identity = record.identity()
    notes = [RequestNote(time.perf_counter_ns()) for _ in range(3)]
    await guard.admit(identity, notes[0], holds_work=True)
    await guard.admit(identity, notes[1], holds_work=True)
    with pytest.raises(RateLimited, match="already has 2 requests in flight") as caught:
        await guard.admit(identity, notes[2], holds_work=True)
    assert caught.value.headers()["Retry-After"] == "1"
    await guard.admit(identity, None, holds_work=False)  # metadata calls take no slot
    await guard.release(notes[0])
    await guard.admit(identity, notes[2], holds_work=True)
    for note in notes:
        await guard.release(note)
    assert not notes[0].slots
