"""JWT verification with real tokens: HS256, RS256 from a PEM key and from a JWKS file."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import jwt
import pytest

from security.tokens import SECRET, hs256, rs256, rsa_key, write_jwks, write_public_pem
from tierserve.errors import InvalidInput, Unauthorized
from tierserve.security.rates import Window
from tierserve.security.roles import Role
from tierserve.security.tokens import JwtSettings, TokenVerifier


def hs_verifier(**kw: object) -> TokenVerifier:
    return TokenVerifier(JwtSettings(secret=SECRET, audience="tierserve", **kw))  # type: ignore[arg-type]


def test_an_hs256_token_gives_its_identity() -> None:
    identity = hs_verifier().verify(hs256(tier="gold", rate="10/s", concurrency=2), time.time())
    assert identity.key_id == "jwt:svc-1"
    assert (identity.tenant, identity.role, identity.tier) == ("acme", Role.USER, "gold")
    assert identity.limits.window == Window(10, 1)
    assert identity.limits.concurrency == 2


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: hs256(exp=int(time.time()) - 3600), "expired"),
        (lambda: hs256(exp=None), "exp"),
        (lambda: hs256(aud="someone-else"), "(?i)audience"),
        (lambda: hs256(aud=None), "aud"),
        (lambda: hs256(secret="another-secret-that-is-also-long-enough!!"), "Signature"),
        (lambda: hs256(tenant=None), "tenant"),
        (lambda: hs256(role="root"), "unknown role"),
        (lambda: hs256(tier=3), "tier"),
        (lambda: hs256(rate="lots"), "invalid rate"),
        (lambda: "not.a.token", "invalid token"),
    ],
)
def test_bad_tokens_are_refused(make: Callable[[], str], message: str) -> None:
    with pytest.raises(Unauthorized, match=message):
        hs_verifier().verify(make(), time.time())


def test_unsigned_and_unexpected_algorithms_are_refused() -> None:
    unsigned = jwt.encode(
        {"tenant": "acme", "role": "admin", "exp": time.time() + 60, "aud": "tierserve"}, None, "none"
    )
    with pytest.raises(Unauthorized, match="algorithm 'none' is not accepted"):
        hs_verifier().verify(unsigned, time.time())
    with pytest.raises(Unauthorized, match="'RS256' is not accepted"):
        hs_verifier().verify(rs256(rsa_key()), time.time())


def test_the_issuer_is_checked_when_configured() -> None:
    verifier = hs_verifier(issuer="https://idp.example")
    assert verifier.verify(hs256(iss="https://idp.example"), time.time()).tenant == "acme"
    with pytest.raises(Unauthorized, match="iss"):
        verifier.verify(hs256(), time.time())


def test_without_a_configured_audience_tokens_need_none() -> None:
    verifier = TokenVerifier(JwtSettings(secret=SECRET))
    assert verifier.verify(hs256(aud=None), time.time()).role is Role.USER


def test_a_short_secret_is_refused_at_start() -> None:
    with pytest.raises(InvalidInput, match="at least 32 bytes"):
        TokenVerifier(JwtSettings(secret="short"))


def test_rs256_with_a_pem_public_key(tmp_path: Path) -> None:
    key = rsa_key()
    verifier = TokenVerifier(JwtSettings(public_key=write_public_pem(key, tmp_path / "pub.pem")))
    assert verifier.verify(rs256(key, role="admin", aud=None), time.time()).role is Role.ADMIN
    with pytest.raises(Unauthorized, match="Signature"):
        verifier.verify(rs256(rsa_key(), aud=None), time.time())  # signed by someone else


def test_rs256_with_a_jwks_file_picks_the_key_by_kid(tmp_path: Path) -> None:
    first, second = rsa_key(), rsa_key()
    jwks = write_jwks({"k1": first, "k2": second}, tmp_path / "jwks.json")
    verifier = TokenVerifier(JwtSettings(jwks=jwks, audience="tierserve"))
    assert verifier.verify(rs256(first, kid="k1", tenant="t1"), time.time()).tenant == "t1"
    assert verifier.verify(rs256(second, kid="k2", tenant="t2"), time.time()).tenant == "t2"
    with pytest.raises(Unauthorized, match="Signature"):
        verifier.verify(rs256(first, kid="k2"), time.time())
    with pytest.raises(Unauthorized, match="no public key"):
        verifier.verify(rs256(first, kid="k3"), time.time())


def test_an_unreadable_jwks_file_fails_the_start(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(InvalidInput, match="JWKS"):
        TokenVerifier(JwtSettings(jwks=tmp_path / "bad.json"))


def test_verified_tokens_are_cached_until_they_expire() -> None:
    verifier = hs_verifier()
    now = time.time()
    token = hs256(exp=int(now) + 60)
    first = verifier.verify(token, now)
    assert verifier.verify(token, now + 5) is first  # from the cache
    # Past its exp the cache no longer answers: the token is verified again (by PyJWT, on its clock).
    assert verifier.verify(token, now + 3600) is not first
