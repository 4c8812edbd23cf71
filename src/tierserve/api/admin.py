"""Admin routes: API keys, the audit log, the effective configuration. Thin: decode, call
``SecurityService``, encode.

POST   /v1/admin/keys            201 {id, key, ...}: the key is in this answer only
GET    /v1/admin/keys            ?include_revoked=true
DELETE /v1/admin/keys/{key_id}   revoke
GET    /v1/audit                 ?since=&until=&tenant=&action=&kind=&limit=&cursor=
GET    /v1/admin/config          settings in force (no secrets), tiers, tenant limits
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Query
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response

from tierserve.api.auth import access
from tierserve.api.auth.access import audited, identity_of
from tierserve.api.body import read_body
from tierserve.api.responses import json_response
from tierserve.cursors import parse_cursor
from tierserve.errors import InvalidInput
from tierserve.security.audit_records import AuditQuery
from tierserve.security.identity import ANONYMOUS

if TYPE_CHECKING:
    from tierserve.api.app import AppState
    from tierserve.security.service import SecurityService

router = APIRouter(tags=["admin"])

MAX_KEY_BODY = 1 << 16


class ErrorBody(BaseModel):
    error: str


class KeyCreate(BaseModel):
    tenant: str
    role: Literal["reader", "user", "operator", "admin"]
    tier: str | None = None
    rate: str | None = None  # e.g. 50/s, 600/min
    burst: int | None = None
    concurrency: int | None = None
    description: str = ""


class KeyView(BaseModel):
    id: str
    tenant: str
    role: str
    tier: str | None
    rate: str | None
    burst: int | None
    concurrency: int | None
    window: str | None
    description: str
    created_at: float
    created_by: str
    revoked_at: float | None


class KeyCreated(KeyView):
    key: str


class KeyList(BaseModel):
    keys: list[KeyView]


class AuditEntry(BaseModel):
    seq: int | None
    at: float
    kind: str
    action: str
    key_id: str
    tenant: str | None
    status: int
    target: str | None
    detail: str | None
    model: str | None
    version: str | None
    tier: str | None
    latency_ms: float | None
    pool: str | None
    cost: float | None


class AuditPage(BaseModel):
    records: list[AuditEntry]
    next_cursor: str | None


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorBody} for code in codes}


def _security(request: Request) -> SecurityService:
    state: AppState = request.app.state.tierserve
    return state.security


_CREATE_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": KeyCreate.model_json_schema()}},
    }
}


@router.post(
    "/v1/admin/keys",
    dependencies=access.ADMIN,
    status_code=201,
    response_class=Response,
    openapi_extra=_CREATE_DOC,
    responses={
        201: {"model": KeyCreated, "description": "The key, shown only in this answer."},
        **_errors(400, 413),
    },
)
async def create_key(request: Request) -> Response:
    security = _security(request)
    async with audited(request, "keys.create") as action:
        try:
            doc = orjson.loads(await read_body(request, MAX_KEY_BODY))
        except orjson.JSONDecodeError as exc:
            raise InvalidInput(f"failed to parse the JSON body: {exc}") from None
        if not isinstance(doc, dict):
            raise InvalidInput(
                "the body must be a JSON object: {tenant, role, tier?, rate?, burst?, concurrency?}"
            )
        record, secret = await security.create_key(doc, identity_of(request) or ANONYMOUS)
        action.target, action.tenant, action.status = record.id, record.tenant, 201
    return json_response({"key": secret, **record.describe()}, 201)


@router.get(
    "/v1/admin/keys",
    dependencies=access.ADMIN,
    response_class=Response,
    responses={200: {"model": KeyList}, **_errors(400)},
)
async def list_keys(request: Request, include_revoked: bool = False) -> Response:
    records = await _security(request).keys(include_revoked=include_revoked)
    return json_response({"keys": [r.describe() for r in records]})


@router.delete(
    "/v1/admin/keys/{key_id}",
    dependencies=access.ADMIN,
    response_class=Response,
    responses={200: {"model": KeyView, "description": "Revoked (or already revoked)."}, **_errors(404)},
)
async def revoke_key(request: Request, key_id: str) -> Response:
    async with audited(request, "keys.revoke", key_id) as action:
        record = await _security(request).revoke_key(key_id)
        action.tenant = record.tenant
    return json_response(record.describe())


@router.get(
    "/v1/audit",
    dependencies=access.ADMIN,
    tags=["audit"],
    response_class=Response,
    responses={200: {"model": AuditPage}, **_errors(400)},
)
async def audit_log(
    request: Request,
    since: Annotated[str | None, Query(description="RFC 3339 time or Unix seconds (inclusive)")] = None,
    until: Annotated[str | None, Query(description="RFC 3339 time or Unix seconds (exclusive)")] = None,
    tenant: str | None = None,
    action: Annotated[str | None, Query(description="e.g. infer, keys.create, model.load")] = None,
    kind: Literal["admin", "inference"] | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
) -> Response:
    query = AuditQuery(
        since=_time("since", since),
        until=_time("until", until),
        tenant=tenant,
        action=action,
        kind=kind,
        limit=limit,
        before=parse_cursor(cursor),
    )
    records, next_cursor = await _security(request).audit_page(query)
    return json_response(
        {
            "records": [r.describe() for r in records],
            "next_cursor": None if next_cursor is None else str(next_cursor),
        }
    )


@router.get("/v1/admin/config", dependencies=access.ADMIN, response_class=Response)
async def config(request: Request) -> Response:
    """The settings in force (secrets left out), the tiers, and the tenant limits."""
    state: AppState = request.app.state.tierserve
    settings = {
        name: str(value) if value is not None and not isinstance(value, int | float | bool) else value
        for name, value in vars(state.settings).items()
        if name not in ("jwt_secret",)
    }
    settings["database"] = _redact(state.settings.database)
    settings["redis"] = _redact(state.settings.redis)
    guard = state.security.guard
    return json_response(
        {
            "settings": settings,
            "tiers": [t.describe() for t in state.engine.tiers.tiers],
            "tenants": {name: limits.describe() for name, limits in guard.tenants.items()},
            "auth": {"enabled": guard.enabled, "keys": guard.key_count, "jwt": guard.verifier is not None},
        }
    )


def _time(name: str, raw: str | None) -> float | None:
    if raw is None:
        return None
    try:
        return float(raw)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"'{name}' must be an RFC 3339 time or Unix seconds, not {raw!r}") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _redact(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    credentials, _, host = rest.rpartition("@")
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in credentials else url
