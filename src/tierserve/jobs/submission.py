"""Checking a submitted job before it is accepted: the same checks an online request gets."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from typing import Any

import orjson

from tierserve.engine.engine import Engine
from tierserve.engine.validate import prepare
from tierserve.errors import InvalidInput
from tierserve.jobs.job import JobSpec
from tierserve.protocol.codec import decode_request

MAX_ATTEMPTS_LIMIT = 100
MAX_TIME_LIMIT_S = 7 * 24 * 3600.0
MAX_KEY_LENGTH = 255


@dataclass(frozen=True)
class SubmitDefaults:
    max_attempts: int


def build_spec(
    body: bytes,
    idempotency_key: str | None,
    engine: Engine,
    defaults: SubmitDefaults,
    *,
    tenant: str | None = None,
    default_tier: str | None = None,
) -> JobSpec:
    """A job from a ``POST /v1/jobs`` body: a V2 inference request plus ``model``, optional
    ``version``, ``tier``, ``max_attempts`` and ``time_limit_s`` (per attempt; default: the tier's
    ``job_time_limit_ms``), owned by ``tenant``; ``default_tier`` (the API key's) when it names no
    tier. Raises InvalidInput (400) or ModelNotFound (404)."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"failed to parse the job JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidInput("the job body must be a JSON object")
    model = doc.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidInput("a job needs 'model', the name of a model")

    version = _version(doc.get("version"))
    deployment = engine.deployment(model, version)
    request = decode_request(body, None)
    prepare(deployment.signature, deployment.max_batch_size, request, model)
    tier = _tier(doc, request.parameters, engine, default_tier)
    max_attempts = _max_attempts(doc.get("max_attempts"), defaults.max_attempts)
    tier_spec = engine.tiers.get(tier)
    time_limit = _time_limit(doc.get("time_limit_s"), tier_spec.job_time_limit_s)
    if idempotency_key is not None and not 0 < len(idempotency_key) <= MAX_KEY_LENGTH:
        raise InvalidInput(f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} characters")
    return JobSpec(
        id=str(uuid.uuid4()),
        model=model,
        version=version,
        tier=tier,
        max_attempts=max_attempts,
        body=body,
        # Keys are per tenant: another tenant's same key neither finds nor blocks this one's job.
        idempotency_key=f"{tenant}/{idempotency_key}" if tenant and idempotency_key else idempotency_key,
        fingerprint="" if idempotency_key is None else fingerprint(doc),
        tenant=tenant,
        priority=tier_spec.priority,
        time_limit_s=time_limit,
    )


def fingerprint(doc: dict[str, Any]) -> str:
    """Equal for equal JSON documents, whatever their key order or spacing."""
    return hashlib.sha256(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _version(raw: object) -> str | None:
    if raw is None or raw == "":
        return None
    if isinstance(raw, int) and not isinstance(raw, bool):
        return str(raw)
    if isinstance(raw, str):
        return raw
    raise InvalidInput("'version' must be a string or an integer")


def _tier(doc: dict[str, Any], parameters: dict[str, Any], engine: Engine, default: str | None) -> str:
    name = doc.get("tier", parameters.get("tier", default))
    if name is None:
        return engine.tiers.lowest.name  # jobs are asynchronous: the least urgent tier by default
    if not isinstance(name, str):
        raise InvalidInput("'tier' must be a string")
    return engine.tiers.get(name).name


def _time_limit(raw: object, default: float | None) -> float | None:
    if raw is None:
        return default
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not 0 < raw <= MAX_TIME_LIMIT_S:
        raise InvalidInput(
            f"'time_limit_s' must be a number of seconds above 0, at most {MAX_TIME_LIMIT_S:g}"
        )
    return float(raw)


def _max_attempts(raw: object, default: int) -> int:
    if raw is None:
        return default
    if isinstance(raw, bool) or not isinstance(raw, int) or not 1 <= raw <= MAX_ATTEMPTS_LIMIT:
        raise InvalidInput(f"'max_attempts' must be an integer from 1 to {MAX_ATTEMPTS_LIMIT}")
    return raw
