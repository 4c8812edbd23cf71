"""Security's HTTP glue: what each route declares (the role it needs), the check that enforces it,
and what handlers read of the caller. Example::

    @router.get("/v1/profiles", dependencies=access.OPERATOR)
    async def profiles(request: Request) -> Response: ...

The check is a FastAPI dependency on the route itself, so no middleware has to match routes again.
With authentication off it returns at once; with it on, it costs a dict lookup (or a cached JWT),
the role comparison, and the rate-limit counters. Handlers reach the caller through
``identity_of(request)`` (None while authentication is off).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

from fastapi import Depends
from fastapi.routing import APIRoute
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from tierserve.engine.request import Decision, InferRequest
from tierserve.errors import TierserveError
from tierserve.security.audit_records import admin_record
from tierserve.security.guard import Guard, RequestNote
from tierserve.security.identity import ANONYMOUS, Identity
from tierserve.security.roles import Role
from tierserve.security.service import SecurityService

log = logging.getLogger(__name__)

IDENTITY = "tierserve.identity"  # request.scope keys
NOTE = "tierserve.note"


def note_decision(request: Request, decision: Decision | None) -> None:
    """Hand what the engine decided for this request (``InferRequest.decision``) to its inference
    audit record (a no-op while authentication is off). Several engine requests behind one call (an
    embeddings request in chunks) add up: their costs are summed, the last pool is kept."""
    note: RequestNote | None = request.scope.get(NOTE)
    if note is None or decision is None:
        return
    before = note.decision
    if before is not None and before.cost is not None and decision.cost is not None:
        decision = replace(decision, cost=before.cost + decision.cost)
    note.decision = decision


class Access:
    """A route's requirement: ``role`` (None: open to anyone), whether the request holds inference
    work (counted against concurrency caps), and the action its inference audit record names.
    The last two take effect on ``guarded`` endpoints (the inference hot path), which see the whole
    request; as a FastAPI dependency, an Access authenticates, authorises and counts the rate."""

    __slots__ = ("audit", "holds_work", "role")

    def __init__(self, role: Role | None, *, holds_work: bool = False, audit: str | None = None) -> None:
        self.role = role
        self.holds_work = holds_work
        self.audit = audit

    async def __call__(self, request: Request) -> None:
        if self.role is None:
            return
        guard = request.app.state.tierserve.security.guard
        if not guard.enabled:
            return
        headers = request.headers
        scope = request.scope
        authorization, api_key = headers.get("authorization"), headers.get("x-api-key")
        scope[IDENTITY] = await self.check(guard, authorization, api_key, scope.get(NOTE))

    async def check(
        self, guard: Guard, authorization: str | None, api_key: str | None, note: RequestNote | None
    ) -> Identity:
        """Authenticate, authorise and admit one call (any protocol); the caller's identity."""
        assert self.role is not None
        identity = guard.authenticate(authorization, api_key)
        if note is not None:  # refused requests are audited too (403, 429), with who asked
            note.identity = identity
            note.action = self.audit
        guard.authorize(identity, self.role)
        await guard.admit(identity, note, self.holds_work)
        return identity

    def __repr__(self) -> str:
        return f"Access({'public' if self.role is None else self.role})"


PUBLIC = [Depends(Access(None))]
READER = [Depends(Access(Role.READER))]
USER = [Depends(Access(Role.USER))]
OPERATOR = [Depends(Access(Role.OPERATOR))]
ADMIN = [Depends(Access(Role.ADMIN))]
INFER = [Depends(Access(Role.USER, holds_work=True, audit="infer"))]

Endpoint = Callable[[Request], Awaitable[Response]]


def guarded(dependencies: list[Any], endpoint: Endpoint) -> Endpoint:
    """A plain Starlette endpoint (no FastAPI dependency solving, for speed) checked as a FastAPI
    route with ``dependencies`` (one of the lists above) would be. Example::

        router.add_route(path, guarded(access.INFER, infer_endpoint), methods=["POST"])
    """
    access = dependencies[0].dependency
    assert isinstance(access, Access)

    async def checked(request: Request) -> Response:
        security = request.app.state.tierserve.security
        if not security.guard.enabled:
            return await endpoint(request)
        params = request.scope.get("path_params") or {}
        async with security.call(model=params.get("model_name"), version=params.get("model_version")) as note:
            request.scope[NOTE] = note
            await access(request)
            response = await endpoint(request)
            note.status = response.status_code
            return response

    checked.__name__ = endpoint.__name__
    checked.__doc__ = endpoint.__doc__
    checked.access = access  # type: ignore[attr-defined]  # read by route_access
    return checked


def all_routes(app: Starlette) -> list[BaseRoute]:
    """Every route of ``app``, those of included routers too (FastAPI may keep them nested)."""
    try:
        from fastapi.routing import iter_route_contexts  # FastAPI >= 0.130 nests included routers
    except ImportError:
        return list(app.routes)
    return [context.original_route for context in iter_route_contexts(app.routes)]


def route_access(route: BaseRoute) -> Access | None:
    """The access a route declares, or None if it declares none (a bug the route-table test finds)."""
    if isinstance(route, APIRoute):
        found = [d.call for d in route.dependant.dependencies if isinstance(d.call, Access)]
        return found[0] if len(found) == 1 else None
    if isinstance(route, Route):
        declared = getattr(route.endpoint, "access", None)
        return declared if isinstance(declared, Access) else None
    return None


# -- for handlers ----------------------------------------------------------------------------------


def identity_of(request: Request) -> Identity | None:
    identity: Identity | None = request.scope.get(IDENTITY)
    return identity


def tenant_scope(request: Request) -> str | None:
    """The tenant whose resources the caller may see, or None for all (auth off, operators, admins)."""
    identity = identity_of(request)
    return None if identity is None else identity.tenant_scope


def own_tenant(request: Request) -> str | None:
    """The tenant that owns what the caller makes (None while auth is off)."""
    identity = identity_of(request)
    return None if identity is None else identity.tenant


def default_tier(request: Request) -> str | None:
    identity = identity_of(request)
    return None if identity is None else identity.tier


def apply_key_tier(request: Request, decoded: InferRequest) -> None:
    """Hand the key's tier to the engine, which weighs it against what the request names
    (``TierTable.for_request``)."""
    apply_identity_tier(request.scope.get(IDENTITY), decoded)


def apply_identity_tier(identity: Identity | None, decoded: InferRequest) -> None:
    """``apply_key_tier`` for a caller already known (gRPC has no Starlette request)."""
    if identity is not None:
        decoded.key_tier = identity.tier


@dataclass
class AdminAction:
    """What an audited admin action reports beyond its outcome."""

    target: str | None = None
    tenant: str | None = None
    detail: str | None = None
    status: int = 200


@contextlib.asynccontextmanager
async def audited(request: Request, action: str, target: str | None = None) -> AsyncIterator[AdminAction]:
    """Audit an admin action with its result, stored before the response is sent. Example::

    async with audited(request, "model.load", model_name):
        await asyncio.to_thread(engine.load, model_name)
    """
    async with audited_by(request.app.state.tierserve.security, identity_of(request), action, target) as note:
        yield note


@contextlib.asynccontextmanager
async def audited_by(
    security: SecurityService, identity: Identity | None, action: str, target: str | None = None
) -> AsyncIterator[AdminAction]:
    """``audited`` for a caller already known (gRPC has no Starlette request)."""
    who = identity or ANONYMOUS
    note = AdminAction(target=target)

    def record(status: int, detail: str | None) -> Any:
        return admin_record(
            action,
            actor=who.key_id,
            tenant=note.tenant or who.tenant or None,
            status=status,
            now=time.time(),
            target=note.target,
            detail=detail,
        )

    try:
        yield note
    except Exception as exc:
        status = exc.status_code if isinstance(exc, TierserveError) else 500
        detail = exc.message if isinstance(exc, TierserveError) else f"{type(exc).__name__}: {exc}"
        try:
            await security.audit.write(record(status, detail))
        except Exception:  # the action's own error is the one to answer with
            log.exception("could not audit the failed %s", action)
        raise
    await security.audit.write(record(note.status, note.detail))
