"""Signing keys and tokens for tests, made with PyJWT and cryptography as an identity provider would."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

SECRET = "a-test-secret-that-is-long-enough-for-hs256!"


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def write_public_pem(key: rsa.RSAPrivateKey, path: Path) -> Path:
    path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return path


def write_jwks(keys: dict[str, rsa.RSAPrivateKey], path: Path) -> Path:
    entries = []
    for kid, key in keys.items():
        entry = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
        entries.append({**entry, "kid": kid, "use": "sig", "alg": "RS256"})
    path.write_text(json.dumps({"keys": entries}))
    return path


def claims(**overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "sub": "svc-1",
        "tenant": "acme",
        "role": "user",
        "exp": int(time.time()) + 300,
        "aud": "tierserve",
    }
    values.update(overrides)
    return {k: v for k, v in values.items() if v is not None}


def hs256(secret: str = SECRET, **overrides: Any) -> str:
    return jwt.encode(claims(**overrides), secret, algorithm="HS256")


def rs256(key: rsa.RSAPrivateKey, kid: str | None = None, **overrides: Any) -> str:
    headers = {"kid": kid} if kid else None
    return jwt.encode(claims(**overrides), key, algorithm="RS256", headers=headers)
