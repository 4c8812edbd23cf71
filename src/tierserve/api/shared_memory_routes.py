"""Triton's shared-memory extensions over HTTP: ``/v2/systemsharedmemory/...`` and
``/v2/cudasharedmemory/...`` (see ``tierserve.api.shared_memory`` for the rules).

Regions are server-wide (one client can unregister another's), so managing them needs the operator
role when authentication is on. CUDA shared memory needs a GPU pool to place tensors in: without one,
registering a CUDA region answers 400 and says so, while status and unregister answer as for an empty
registry (what tritonclient's examples call first, to start clean).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from tierserve.api.auth import access
from tierserve.api.body import read_body
from tierserve.api.responses import error_docs, json_response
from tierserve.errors import InvalidInput
from tierserve.protocol.codec import parse_json_object

if TYPE_CHECKING:
    from tierserve.api.app import AppState

router = APIRouter(tags=["shared memory"])

_SMALL_BODY = 1 << 16
_errors = error_docs


def _state(request: Request) -> AppState:
    state: AppState = request.app.state.tierserve
    return state


# -- system (POSIX) shared memory ---------------------------------------------------------------


@router.get("/v2/systemsharedmemory/status", dependencies=access.OPERATOR, responses=_errors(404))
@router.get(
    "/v2/systemsharedmemory/region/{region_name}/status", dependencies=access.OPERATOR, responses=_errors(404)
)
async def system_status(request: Request, region_name: str | None = None) -> Response:
    return json_response(_state(request).shared_memory.status(region_name))


@router.post(
    "/v2/systemsharedmemory/region/{region_name}/register",
    dependencies=access.OPERATOR,
    responses=_errors(400, 413),
)
async def system_register(request: Request, region_name: str) -> Response:
    options = parse_json_object(await read_body(request, _SMALL_BODY), "shared memory registration")
    key = options.get("key")
    if not isinstance(key, str):
        raise InvalidInput("registering a shared memory region needs a string 'key'")
    _state(request).shared_memory.register(
        region_name, key, options.get("offset", 0), options.get("byte_size", 0)
    )
    return json_response({})


@router.post("/v2/systemsharedmemory/unregister", dependencies=access.OPERATOR, responses=_errors(400, 413))
@router.post(
    "/v2/systemsharedmemory/region/{region_name}/unregister",
    dependencies=access.OPERATOR,
    responses=_errors(400, 413),
)
async def system_unregister(request: Request, region_name: str | None = None) -> Response:
    parse_json_object(await read_body(request, _SMALL_BODY), "shared memory unregistration")
    _state(request).shared_memory.unregister(region_name)
    return json_response({})


# -- CUDA shared memory -------------------------------------------------------------------------


@router.get("/v2/cudasharedmemory/status", dependencies=access.OPERATOR, responses=_errors(404))
@router.get(
    "/v2/cudasharedmemory/region/{region_name}/status", dependencies=access.OPERATOR, responses=_errors(404)
)
async def cuda_status(request: Request, region_name: str | None = None) -> Response:
    if region_name is not None:
        return json_response({"error": f"Unable to find cuda shared memory region: '{region_name}'"}, 404)
    return json_response([])


@router.post(
    "/v2/cudasharedmemory/region/{region_name}/register",
    dependencies=access.OPERATOR,
    responses=_errors(400, 413),
)
async def cuda_register(request: Request, region_name: str) -> Response:
    await read_body(request, _SMALL_BODY)
    if any(pool.gpu for pool in _state(request).engine.pools):
        raise InvalidInput(
            "CUDA shared memory is not supported by this server yet, not even with its GPU pool; use "
            "system shared memory (/v2/systemsharedmemory) or send tensors in the request body"
        )
    raise InvalidInput(
        "CUDA shared memory needs a GPU pool, and this server has none; use system shared memory "
        "(/v2/systemsharedmemory) or send tensors in the request body"
    )


@router.post("/v2/cudasharedmemory/unregister", dependencies=access.OPERATOR, responses=_errors(400, 413))
@router.post(
    "/v2/cudasharedmemory/region/{region_name}/unregister",
    dependencies=access.OPERATOR,
    responses=_errors(400, 413),
)
async def cuda_unregister(request: Request, region_name: str | None = None) -> Response:
    parse_json_object(await read_body(request, _SMALL_BODY), "shared memory unregistration")
    return json_response({})  # nothing can be registered without a GPU pool
