"""tierserve's own ``/v1`` routes beyond jobs: profiles and (read-only) operational state."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from tierserve.api.auth import access
from tierserve.api.auth.access import IDENTITY
from tierserve.api.responses import json_response
from tierserve.security.identity import Identity

if TYPE_CHECKING:
    from tierserve.api.app import AppState

router = APIRouter()


@router.get("/v1/profiles", tags=["profiles"], dependencies=access.OPERATOR)
async def profiles(request: Request) -> Response:
    """Service time per batch size for every model version on every pool: the online estimate (EWMA of
    observed batches) and what seeded it (a `tierserve profile` file or the load-time sweep)."""
    state: AppState = request.app.state.tierserve
    return json_response({"profiles": state.engine.profiles()})


@router.get("/v1/autoscale", tags=["autoscaling"], dependencies=access.OPERATOR)
async def autoscale(request: Request) -> Response:
    """The autoscaler's latest recommendation per pool, what it observed, and why."""
    state: AppState = request.app.state.tierserve
    return json_response(state.autoscaler.describe())


@router.get("/v1/budgets", tags=["budgets"], dependencies=access.READER)
async def budgets(request: Request) -> Response:
    """Budgets and free-tier quotas in their current windows: limit, used, remaining, when each resets.
    Readers and users see their own tenant's budgets; operators and admins see all."""
    state: AppState = request.app.state.tierserve
    identity: Identity | None = request.scope.get(IDENTITY)
    scope = None if identity is None else identity.tenant_scope
    rows = [
        row.as_dict()
        for row in state.engine.budgeting.book.rows(state.usage.clock())
        if scope is None or row.scope == f"tenant:{scope}"
    ]
    return json_response({"budgets": rows})
