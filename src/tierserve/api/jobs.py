"""Durable async jobs over HTTP: ``/v1/jobs``. Routes decode, call ``JobService``, encode.

POST   /v1/jobs                        202 {id, status, links} + Location
GET    /v1/jobs?status=&model=&limit=&cursor=
GET    /v1/jobs/{id}                   status, attempts, times, last error, V2 result when done
DELETE /v1/jobs/{id}                   cancel a queued job
GET    /v1/jobs/{id}/events            Server-Sent Events: one per status change
POST   /v1/admin/jobs/{id}/requeue     a dead job (dead letter) back to the queue
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import orjson
from fastapi import APIRouter, Query
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tierserve.api.auth import access
from tierserve.api.auth.access import audited, default_tier, guarded, own_tenant, tenant_scope
from tierserve.api.responses import json_response
from tierserve.jobs.job import Job
from tierserve.jobs.service import JobService
from tierserve.jobs.states import JobStatus

if TYPE_CHECKING:
    from tierserve.api.app import AppState

router = APIRouter(tags=["jobs"])

JOBS_PATH = "/v1/jobs"

# -- the OpenAPI document (the routes build their responses themselves, for speed) -------------------


class ErrorBody(BaseModel):
    error: str


class JobLinks(BaseModel):
    self: str
    events: str


class JobAccepted(BaseModel):
    id: str
    status: JobStatus
    links: JobLinks


class JobView(BaseModel):
    id: str
    model: str
    version: str | None
    tier: str
    status: JobStatus
    attempts: int
    max_attempts: int
    time_limit_s: float | None = None  # per attempt; past it the attempt fails as timed out
    created_at: str
    updated_at: str
    started_at: str | None
    finished_at: str | None
    next_attempt_at: str | None = None  # queued: not before this time
    expires_at: str | None = None  # final: purged after this time
    last_error: str | None
    idempotency_key: str | None = None
    result: dict[str, Any] | None = None  # the V2 inference response, once succeeded
    links: JobLinks


class JobList(BaseModel):
    jobs: list[JobView]
    next_cursor: str | None


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorBody} for code in codes}


_SUBMIT_DOC: dict[str, Any] = {
    # Declared here rather than as a Header() parameter: FastAPI's parameter machinery costs more
    # than the rest of the accept path's Python together.
    "parameters": [
        {
            "name": "Idempotency-Key",
            "in": "header",
            "required": False,
            "schema": {"type": "string", "maxLength": 255},
            "description": "The same key returns the same job (for 24 h, the result's time to live).",
        }
    ],
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["model", "inputs"],
                    "properties": {
                        "model": {"type": "string"},
                        "version": {"type": "string"},
                        "tier": {"type": "string", "default": "bronze"},
                        "max_attempts": {"type": "integer", "minimum": 1, "maximum": 100},
                        "time_limit_s": {"type": "number", "exclusiveMinimum": 0, "maximum": 604800},
                        "id": {"type": "string"},
                        "parameters": {"type": "object"},
                        "inputs": {"type": "array", "description": "V2 inputs (JSON tensor data)"},
                        "outputs": {"type": "array"},
                    },
                }
            }
        },
    },
}

_EVENTS_DOC: dict[str, Any] = {
    "responses": {
        "200": {
            "description": "One `status` event (data: the job without its result) now and on every "
            "change of status or attempts; the stream ends after a final status.",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        }
    }
}


def _service(request: Request) -> JobService:
    state: AppState = request.app.state.tierserve
    return state.jobs


# -- routes ------------------------------------------------------------------------------------------


async def submit_job(request: Request) -> Response:
    state: AppState = request.app.state.tierserve
    limit = state.settings.max_job_body_bytes  # stored until the job is purged: a tighter bound
    async with state.bodies.held(request, "job", limit=limit) as held:  # decoded under the budget
        job, created = await state.jobs.submit(
            held.body,
            request.headers.get("idempotency-key"),
            tenant=own_tenant(request),
            default_tier=default_tier(request),
        )
    headers = {"Location": _self(job.id)}
    if not created:
        headers["Idempotent-Replayed"] = "true"
    return json_response({"id": job.id, "status": job.status, "links": _links(job.id)}, 202, headers)


# Accepting jobs is the hot path: a plain Starlette route serves it, because FastAPI's per-route
# machinery (nested router matching, dependency solving) cost a third of the whole accept path
# (measured in-process: 423 -> 261 us per job). The FastAPI route registered after it never sees a
# request (the plain route matches first); it puts the same endpoint in the OpenAPI document.
HOT_ROUTES = [Route(JOBS_PATH, guarded(access.USER, submit_job), methods=["POST"], include_in_schema=False)]
router.add_api_route(
    JOBS_PATH,
    submit_job,
    methods=["POST"],
    dependencies=access.USER,
    status_code=202,
    response_class=Response,
    openapi_extra=_SUBMIT_DOC,
    responses={
        202: {
            "model": JobAccepted,
            "description": "Accepted and durable. A repeated Idempotency-Key answers with the job it "
            "made (header `Idempotent-Replayed: true`).",
        },
        **_errors(400, 404, 413, 422),
    },
)


@router.get(
    JOBS_PATH,
    response_class=Response,
    responses={200: {"model": JobList}, **_errors(400)},
    dependencies=access.USER,
)
async def list_jobs(
    request: Request,
    status: Annotated[JobStatus | None, Query()] = None,
    model: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
) -> Response:
    page = await _service(request).list_jobs(
        status=status, model=model, limit=limit, cursor=cursor, tenant=tenant_scope(request)
    )
    return json_response(
        {
            "jobs": [job_doc(job) for job in page.jobs],
            "next_cursor": None if page.next_cursor is None else str(page.next_cursor),
        }
    )


@router.get(
    JOBS_PATH + "/{job_id}",
    response_class=Response,
    responses={200: {"model": JobView}, **_errors(404)},
    dependencies=access.USER,
)
async def get_job(request: Request, job_id: str) -> Response:
    return json_response(job_doc(await _service(request).get(job_id, tenant_scope(request))))


@router.delete(
    JOBS_PATH + "/{job_id}",
    response_class=Response,
    responses={
        200: {"model": JobView, "description": "Cancelled (or already cancelled)."},
        **_errors(404, 409),
    },
    dependencies=access.USER,
)
async def cancel_job(request: Request, job_id: str) -> Response:
    return json_response(job_doc(await _service(request).cancel(job_id, tenant_scope(request))))


@router.get(
    JOBS_PATH + "/{job_id}/events",
    response_class=Response,
    openapi_extra=_EVENTS_DOC,
    responses=_errors(404),
    dependencies=access.USER,
)
async def job_events(request: Request, job_id: str) -> Response:
    service = _service(request)
    await service.get(job_id, tenant_scope(request))  # unknown (or not its tenant's): 404 before the stream

    async def stream() -> AsyncIterator[bytes]:
        number = 0
        async for job in service.watch(job_id):
            if job is None:
                yield b": keep-alive\n\n"
                continue
            number += 1
            yield b"id: %d\nevent: status\ndata: %s\n\n" % (number, orjson.dumps(job_doc(job)))

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.post(
    "/v1/admin/jobs/{job_id}/requeue",
    tags=["admin"],
    response_class=Response,
    responses={
        200: {"model": JobView, "description": "Queued again, attempts counted afresh."},
        **_errors(404, 409),
    },
    dependencies=access.OPERATOR,
)
async def requeue_job(request: Request, job_id: str) -> Response:
    async with audited(request, "jobs.requeue", job_id) as action:
        job = await _service(request).requeue(job_id)
        action.tenant = job.tenant
    return json_response(job_doc(job))


# -- encoding ----------------------------------------------------------------------------------------


def job_doc(job: Job) -> dict[str, Any]:
    """The JSON view of a job (with its V2 result when the store returned one)."""
    doc: dict[str, Any] = {
        "id": job.id,
        "model": job.model,
        "version": job.version,
        "tier": job.tier,
        "status": job.status,
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "created_at": _time(job.created_at),
        "updated_at": _time(job.updated_at),
        "started_at": _time(job.started_at),
        "finished_at": _time(job.finished_at),
        "last_error": job.last_error,
        "links": _links(job.id),
    }
    if job.status is JobStatus.QUEUED:
        doc["next_attempt_at"] = _time(job.run_at)
    if job.expires_at is not None:
        doc["expires_at"] = _time(job.expires_at)
    if job.idempotency_key is not None:
        doc["idempotency_key"] = job.client_idempotency_key
    if job.time_limit_s is not None:
        doc["time_limit_s"] = job.time_limit_s
    if job.result is not None:
        doc["result"] = orjson.Fragment(job.result)  # stored as the V2 JSON; not parsed again
    return doc


def _self(job_id: str) -> str:
    return f"{JOBS_PATH}/{job_id}"


def _links(job_id: str) -> dict[str, str]:
    return {"self": _self(job_id), "events": f"{JOBS_PATH}/{job_id}/events"}


def _time(seconds: float | None) -> str | None:
    """RFC 3339 in UTC with milliseconds."""
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
