"""Cheap rejection: a request that admission would reject is answered before its body is decoded.

When the tier is known without decoding (the ``X-Tier`` header, or the API key's tier) and the
body does not name a tier, priority or timeout of its own (a byte search of the JSON part, far
cheaper than decoding it), admission runs for one row at the request's arrival
(``Engine.admit_early``). Service time grows with rows, so a request refused here would be refused
after decoding too; it is answered 503 with ``Retry-After`` at the cost of a header lookup and one
prediction per pool.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from starlette.requests import Request

from tierserve.api.auth.access import default_tier, note_decision
from tierserve.api.body import json_part_length

if TYPE_CHECKING:
    from tierserve.engine.deployment import Deployment
    from tierserve.engine.engine import Engine

# What a V2 body would say to choose its own tier or deadline: with any of them, decode first.
_BODY_TIER_KEYS = (b'"tier"', b'"priority"', b'"timeout"')


def reject_early(
    request: Request,
    engine: Engine,
    deployment: Deployment,
    body: bytes,
    json_length: str | None,
    arrival: float,
) -> None:
    """Raise Unavailable (503) when the request's tier, known from its headers or key, cannot be
    admitted now; otherwise do nothing and let the request be decoded. ``json_length``: the binary
    extension's ``Inference-Header-Content-Length`` (the JSON part of ``body``), if any."""
    json_bytes = json_part_length(json_length)
    head = body if json_bytes is None else body[:json_bytes]
    if any(key in head for key in _BODY_TIER_KEYS):
        return
    header, key_tier = request.headers.get("x-tier"), default_tier(request)
    engine.admit_early(deployment, header, key_tier, arrival, partial(note_decision, request))
