"""Rollout routes: ``/v1/rollouts``. Thin: decode, call ``RolloutService``, encode.

POST   /v1/rollouts                       201 the rollout: {model, candidate, stable?, mode?, steps?, ...}
GET    /v1/rollouts                       the current rollout of every model
GET    /v1/rollouts/{model}               its state, decisions with reasons, this server's last verdict
POST   /v1/rollouts/{model}/promote       all traffic to the candidate now ({reason?})
POST   /v1/rollouts/{model}/rollback      all traffic to stable now ({reason?})
DELETE /v1/rollouts/{model}               a stepping rollout is rolled back; a finished one archived
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import APIRouter
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response

from tierserve.api.auth import access
from tierserve.api.auth.access import audited, identity_of
from tierserve.api.body import read_body
from tierserve.api.responses import json_response
from tierserve.errors import InvalidInput
from tierserve.rollout import RouteKeys
from tierserve.security.audit_records import admin_record

if TYPE_CHECKING:
    from tierserve.api.app import AppState
    from tierserve.releases.service import Auditor, RolloutService
    from tierserve.security.service import SecurityService

router = APIRouter(tags=["rollouts"])

MAX_BODY = 1 << 16


class ErrorBody(BaseModel):
    error: str


class RolloutCreate(BaseModel):
    model: str
    candidate: int
    stable: int | None = None
    mode: str = "canary"  # canary, ab, shadow
    steps: list[float] = [5, 25, 50, 100]
    weight: float | None = None
    min_samples: int = 200
    min_step_s: float = 30
    check_interval_s: float = 5
    sticky: str = "tenant"  # tenant, key, request
    auto_rollback: bool = True
    ab: dict[str, Any] | None = None  # {by: header|tenant|key, header, candidate_values}
    criteria: dict[str, float] | None = None


class RolloutView(BaseModel):
    id: str
    model: str
    stable: int
    candidate: int
    mode: str
    phase: str  # stepping, promoted, rolled_back
    step: int
    weight: float
    decisions: list[dict[str, Any]]
    verdict: dict[str, Any] | None = None
    plan: dict[str, Any]


class RolloutList(BaseModel):
    rollouts: list[RolloutView]


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorBody} for code in codes}


def _service(request: Request) -> RolloutService:
    state: AppState = request.app.state.tierserve
    return state.rollouts


def _actor(request: Request) -> str:
    identity = identity_of(request)
    return "anonymous" if identity is None else identity.key_id


async def _body(request: Request, *, required: bool) -> dict[str, Any]:
    raw = await read_body(request, MAX_BODY)
    if not raw.strip() and not required:
        return {}
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"failed to parse the JSON body: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidInput("the body must be a JSON object")
    return doc


def _reason(doc: dict[str, Any]) -> str | None:
    reason = doc.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise InvalidInput("reason must be a string")
    return reason


def route_keys(request: Request) -> RouteKeys:
    """What a rollout may split an inference request on: its caller's tenant and key, its headers."""
    identity = identity_of(request)
    if identity is None:
        return RouteKeys(headers=request.headers)
    return RouteKeys(tenant=identity.tenant or None, key_id=identity.key_id, headers=request.headers)


@router.post(
    "/v1/rollouts",
    dependencies=access.ADMIN,
    status_code=201,
    response_class=Response,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": RolloutCreate.model_json_schema()}},
        }
    },
    responses={201: {"model": RolloutView}, **_errors(400, 404, 409, 413)},
)
async def create_rollout(request: Request) -> Response:
    async with audited(request, "rollout.create") as action:
        doc = await _body(request, required=True)
        action.target = str(doc.get("model"))
        created = await _service(request).create(doc, _actor(request))
        action.status, action.detail = 201, f"rollout {created['id']} of version {created['candidate']}"
    return json_response(created, 201, {"Location": f"/v1/rollouts/{created['model']}"})


@router.get(
    "/v1/rollouts",
    dependencies=access.OPERATOR,
    response_class=Response,
    responses={200: {"model": RolloutList}},
)
async def list_rollouts(request: Request) -> Response:
    return json_response({"rollouts": await _service(request).all()})


@router.get(
    "/v1/rollouts/{model}",
    dependencies=access.OPERATOR,
    response_class=Response,
    responses={200: {"model": RolloutView}, **_errors(404)},
)
async def get_rollout(request: Request, model: str) -> Response:
    return json_response(await _service(request).get(model))


@router.post(
    "/v1/rollouts/{model}/promote",
    dependencies=access.ADMIN,
    response_class=Response,
    responses={200: {"model": RolloutView}, **_errors(400, 404, 409, 413)},
)
async def promote_rollout(request: Request, model: str) -> Response:
    async with audited(request, "rollout.promote.request", model):
        doc = await _body(request, required=False)
        return json_response(await _service(request).promote(model, _actor(request), _reason(doc)))


@router.post(
    "/v1/rollouts/{model}/rollback",
    dependencies=access.ADMIN,
    response_class=Response,
    responses={200: {"model": RolloutView}, **_errors(400, 404, 409, 413)},
)
async def rollback_rollout(request: Request, model: str) -> Response:
    async with audited(request, "rollout.rollback.request", model):
        doc = await _body(request, required=False)
        return json_response(await _service(request).rollback(model, _actor(request), _reason(doc)))


@router.delete(
    "/v1/rollouts/{model}",
    dependencies=access.ADMIN,
    response_class=Response,
    responses={200: {"model": RolloutView}, **_errors(404, 409)},
)
async def delete_rollout(request: Request, model: str) -> Response:
    async with audited(request, "rollout.delete.request", model):
        return json_response(await _service(request).delete(model, _actor(request)))


def auditor(security: SecurityService) -> Auditor:
    """Writes the rollout service's decisions to the audit log, with who made them and why."""

    async def write(action: str, actor: str, model: str, detail: str) -> None:
        record = admin_record(action, actor=actor, tenant=None, status=200, now=time.time(), target=model,
                              detail=detail)  # fmt: skip
        await security.audit.write(record)

    return write
