"""Which version serves a request: a deterministic, sticky split.

A request's *key* (its tenant, API key id, request id, or a header's value, as the rollout says)
is hashed with the rollout's id into a bucket in [0, 1); the candidate serves buckets below its
weight. The hash is SHA-256, so every server, and every restart, puts a key in the same bucket:
servers that share a rollout agree on each request's version, and as a canary's weight grows
(5% -> 25%) the keys already on the candidate stay there (one user does not flap between versions).

Example::

    bucket("tenant:acme", salt="r-1")            # 0.8303...: stable until the weight passes 83%
    assign(keys, rollout_id="r-1", weight=25.0, sticky="tenant")
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

STICKY = ("tenant", "key", "request")


@dataclass(frozen=True)
class RouteKeys:
    """What a request offers to split on. ``headers`` are looked up by lower-case name."""

    request_id: str | None = None
    tenant: str | None = None
    key_id: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


def bucket(key: str, salt: str) -> float:
    digest = hashlib.sha256(f"{salt}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def sticky_key(keys: RouteKeys, sticky: str, fallback: str) -> str:
    """The key of a request for a weighted split: the ``sticky`` kind when the request has it, else
    the next more specific one (tenant, then key, then request id), else ``fallback``."""
    order = STICKY[STICKY.index(sticky) :]
    for kind in order:
        value = {"tenant": keys.tenant, "key": keys.key_id, "request": keys.request_id}[kind]
        if value:
            return f"{kind}:{value}"
    return f"anonymous:{fallback}"


def in_share(key: str, salt: str, weight_pct: float) -> bool:
    """Whether ``key`` falls in the first ``weight_pct`` percent of buckets."""
    return weight_pct >= 100.0 or (weight_pct > 0.0 and bucket(key, salt) < weight_pct / 100.0)
