"""JSON Web Tokens from an identity provider: HS256 with a shared secret, RS256 with a public key
(PEM) or a JWKS file. Example::

    verifier = TokenVerifier(secret="...32 bytes or more...", audience="tierserve")
    identity = verifier.verify(token, now=time.time())

A token carries ``tenant`` and ``role`` (and optionally ``tier``, ``rate``, ``burst``,
``concurrency`` and ``sub``); ``exp`` is required, and ``aud`` must match when an audience is
configured. Verified tokens are cached until they expire, so a client that reuses its token pays
for the signature check once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from tierserve.errors import InvalidInput, TierserveError, Unauthorized
from tierserve.security.identity import TENANT_RULE, Identity, valid_tenant
from tierserve.security.rates import Limits
from tierserve.security.roles import Role

MIN_SECRET_BYTES = 32  # RFC 7518 3.2: an HS256 key must be at least as long as the hash (256 bits)
_CACHE_SIZE = 4096


@dataclass(frozen=True)
class JwtSettings:
    secret: str = ""
    public_key: Path | None = None  # PEM
    jwks: Path | None = None  # a JSON Web Key Set file
    audience: str = ""
    issuer: str = ""
    leeway_s: float = 30.0  # clock skew allowed on exp/nbf/iat

    @property
    def configured(self) -> bool:
        return bool(self.secret or self.public_key or self.jwks)


class TokenVerifier:
    def __init__(self, settings: JwtSettings) -> None:
        self.settings = settings
        self._secret = settings.secret.encode() if settings.secret else None
        if self._secret is not None and len(self._secret) < MIN_SECRET_BYTES:
            raise InvalidInput(f"the JWT secret must be at least {MIN_SECRET_BYTES} bytes")
        self._rsa: dict[str | None, Any] = {}  # kid -> public key; None: the key for tokens without kid
        if settings.public_key is not None:
            self._rsa[None] = _read_pem(settings.public_key)
        if settings.jwks is not None:
            self._rsa.update(_read_jwks(settings.jwks))
        self._algorithms = (["HS256"] if self._secret else []) + (["RS256"] if self._rsa else [])
        self._cache: dict[str, tuple[Identity, float]] = {}

    def verify(self, token: str, now: float) -> Identity:
        cached = self._cache.get(token)
        if cached is not None and cached[1] > now:
            return cached[0]
        identity, expires = self._verify(token)
        if len(self._cache) >= _CACHE_SIZE:
            self._cache.clear()  # crude but bounded; a busy server refills it with live tokens at once
        self._cache[token] = (identity, expires)
        return identity

    def _verify(self, token: str) -> tuple[Identity, float]:
        try:
            header = jwt.get_unverified_header(token)
            algorithm = header.get("alg")
            if algorithm not in self._algorithms:
                raise Unauthorized(f"token algorithm {algorithm!r} is not accepted")
            claims = jwt.decode(
                token,
                self._key(algorithm, header.get("kid")),
                algorithms=[algorithm],
                audience=self.settings.audience or None,
                issuer=self.settings.issuer or None,
                leeway=self.settings.leeway_s,
                options={"require": ["exp", *(["aud"] if self.settings.audience else [])]},
            )
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"invalid token: {exc}") from None
        return identity_from_claims(claims), float(claims["exp"])

    def _key(self, algorithm: str, kid: object) -> Any:
        if algorithm == "HS256":
            return self._secret
        if isinstance(kid, str) and kid in self._rsa:
            return self._rsa[kid]
        if kid is None and len(self._rsa) == 1:
            return next(iter(self._rsa.values()))
        if None in self._rsa:
            return self._rsa[None]
        raise Unauthorized(f"no public key for token key id {kid!r}")


def identity_from_claims(claims: dict[str, Any]) -> Identity:
    tenant, role = claims.get("tenant"), claims.get("role")
    if not isinstance(tenant, str) or not tenant:
        raise Unauthorized("the token has no 'tenant' claim")
    if not valid_tenant(tenant):
        raise Unauthorized(f"the token's 'tenant' claim must be {TENANT_RULE}")
    tier = claims.get("tier")
    if tier is not None and not isinstance(tier, str):
        raise Unauthorized("the token's 'tier' claim must be a string")
    try:
        parsed_role = Role.parse(role)
        limits = Limits.parse(
            rate=claims.get("rate"), burst=claims.get("burst"), concurrency=claims.get("concurrency")
        )
    except TierserveError as exc:
        raise Unauthorized(f"invalid token claims: {exc.message}") from None
    subject = claims.get("sub")
    key_id = f"jwt:{subject}" if isinstance(subject, str) and subject else f"jwt:{tenant}"
    return Identity(key_id, tenant, parsed_role, tier, limits)


def _read_pem(path: Path) -> Any:
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        return load_pem_public_key(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"cannot read the JWT public key {path}: {exc}") from None


def _read_jwks(path: Path) -> dict[str | None, Any]:
    try:
        key_set = jwt.PyJWKSet.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, jwt.PyJWTError) as exc:
        raise InvalidInput(f"cannot read the JWKS file {path}: {exc}") from None
    keys: dict[str | None, Any] = {}
    for key in key_set.keys:
        if key.key_type == "RSA":  # only RS256 uses these; a symmetric key here would be a mistake
            keys[key.key_id] = key.key
    if not keys:
        raise InvalidInput(f"the JWKS file {path} holds no RSA keys")
    return keys
