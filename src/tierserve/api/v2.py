"""Open Inference Protocol (KServe V2) REST routes plus Triton's extensions.

Routes only decode, call the engine, and encode; see ``tierserve.engine`` for the behaviour.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tierserve.api import documents
from tierserve.api.auth import access
from tierserve.api.auth.access import apply_key_tier, audited, guarded
from tierserve.api.body import read_body
from tierserve.api.compression import compress_response
from tierserve.api.disconnect import ClientDisconnected, unless_disconnected
from tierserve.api.early import reject_early
from tierserve.api.model_control import load_model, load_parameters
from tierserve.api.outputs import finish_outputs
from tierserve.api.raw_binary import decode_raw_request
from tierserve.api.responses import error_docs, json_response
from tierserve.api.rollouts import route_keys
from tierserve.engine.request import InferRequest
from tierserve.errors import ModelNotFound
from tierserve.observability.metrics import CONTENT_TYPE
from tierserve.protocol.codec import decode_request, encode_response, parse_json_object
from tierserve.protocol.tensors import HEADER_LENGTH

if TYPE_CHECKING:
    from tierserve.api.app import AppState

router = APIRouter()


_INFER_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["inputs"],
                    "properties": {
                        "id": {"type": "string"},
                        "parameters": {"type": "object"},
                        "inputs": {"type": "array"},
                        "outputs": {"type": "array"},
                    },
                }
            },
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    },
}


_errors = error_docs


def _state(request: Request) -> AppState:
    state: AppState = request.app.state.tierserve
    return state


# -- health and metadata -----------------------------------------------------------------------


@router.get("/v2/health/live", tags=["health"], dependencies=access.PUBLIC)
async def live() -> Response:
    return json_response({"live": True})


@router.get("/v2/health/ready", tags=["health"], dependencies=access.PUBLIC)
async def ready(request: Request) -> Response:
    state = _state(request)
    reasons = state.engine.not_ready_reasons(strict=state.settings.strict_readiness)
    if not reasons:
        return json_response({"ready": True})
    return json_response({"ready": False, "reason": "; ".join(reasons)}, 503)


@router.get("/v2", tags=["metadata"], dependencies=access.READER)
@router.get("/v2/", tags=["metadata"], include_in_schema=False, dependencies=access.READER)
async def server_metadata() -> Response:
    return json_response(documents.server_metadata())


# Before the {model_name} routes: otherwise "stats" would be taken for a model name.
@router.get("/v2/models/stats", tags=["statistics"], dependencies=access.OPERATOR, responses=_errors(404))
@router.get(
    "/v2/models/{model_name}/stats", tags=["statistics"], dependencies=access.OPERATOR, responses=_errors(404)
)
@router.get(
    "/v2/models/{model_name}/versions/{model_version}/stats",
    tags=["statistics"],
    dependencies=access.OPERATOR,
    responses=_errors(404),
)
async def model_stats(
    request: Request, model_name: str | None = None, model_version: str | None = None
) -> Response:
    return json_response({"model_stats": _state(request).engine.stats(model_name, model_version)})


@router.get("/v2/models/{model_name}", tags=["metadata"], dependencies=access.READER, responses=_errors(404))
@router.get(
    "/v2/models/{model_name}/versions/{model_version}",
    tags=["metadata"],
    dependencies=access.READER,
    responses=_errors(404),
)
async def model_metadata(request: Request, model_name: str, model_version: str | None = None) -> Response:
    return json_response(documents.model_metadata(_state(request).engine, model_name, model_version))


@router.get(
    "/v2/models/{model_name}/ready", tags=["health"], dependencies=access.READER, responses=_errors(404, 503)
)
@router.get(
    "/v2/models/{model_name}/versions/{model_version}/ready",
    tags=["health"],
    dependencies=access.READER,
    responses=_errors(404, 503),
)
async def model_ready(request: Request, model_name: str, model_version: str | None = None) -> Response:
    documents.check_model_ready(_state(request).engine, model_name, model_version)
    return json_response({"name": model_name, "ready": True})


@router.get(
    "/v2/models/{model_name}/config",
    tags=["model configuration"],
    dependencies=access.READER,
    responses=_errors(404),
)
@router.get(
    "/v2/models/{model_name}/versions/{model_version}/config",
    tags=["model configuration"],
    dependencies=access.READER,
    responses=_errors(404),
)
async def model_config(request: Request, model_name: str, model_version: str | None = None) -> Response:
    """Triton's model configuration extension (what perf_analyzer reads)."""
    return json_response(documents.model_config(_state(request).engine, model_name, model_version))


# -- inference ---------------------------------------------------------------------------------


INFER_PATHS = ("/v2/models/{model_name}/infer", "/v2/models/{model_name}/versions/{model_version}/infer")


async def infer_endpoint(request: Request) -> Response:
    """The inference hot path as a plain Starlette endpoint: FastAPI's per-route machinery
    (dependency solving, parameter validation) cost about a third of the server's own time per
    request. The FastAPI routes below never see a request (these match first); they document it."""
    params = request.path_params
    return await infer(request, params["model_name"], params.get("model_version"))


# Added to the application's own route list, ahead of every included router (see api/app.py).
HOT_ROUTES = [
    Route(path, guarded(access.INFER, infer_endpoint), methods=["POST"], include_in_schema=False)
    for path in INFER_PATHS
]


@router.post(
    INFER_PATHS[0],
    tags=["inference"],
    openapi_extra=_INFER_DOC,
    dependencies=access.INFER,
    responses=_errors(400, 404, 413, 415, 500, 503),
)
@router.post(
    INFER_PATHS[1],
    tags=["inference"],
    openapi_extra=_INFER_DOC,
    dependencies=access.INFER,
    responses=_errors(400, 404, 413, 415, 500, 503),
)
async def infer(request: Request, model_name: str, model_version: str | None = None) -> Response:
    state = _state(request)
    arrival = state.engine.clock()  # the deadline counts from here
    deployment = state.engine.deployment(model_name, model_version)  # unknown model: 404 before the body
    header_length = request.headers.get(HEADER_LENGTH)

    def decode(body: bytes) -> InferRequest:
        if header_length is not None and header_length.strip() == "0":  # Triton's raw binary request
            return decode_raw_request(body, deployment.signature, deployment.max_batch_size, model_name)
        return decode_request(body, header_length, state.shared_memory)

    decoded = await state.bodies.decode(
        request,
        decode,
        check=lambda body: reject_early(request, state.engine, deployment, body, header_length, arrival),
    )
    decoded.arrival = arrival
    decoded.tier = request.headers.get("x-tier")
    apply_key_tier(request, decoded)  # the API key's tier when the request names none
    decoded.tenant = access.own_tenant(request) or ""  # cached answers never cross tenants
    decoded.routing = route_keys(request) if state.engine.rollouts else None  # a rollout's split keys
    try:
        infer = state.engine.infer(deployment, decoded, pinned=model_version is not None)
        response = await unless_disconnected(request, infer)
    except ClientDisconnected:
        return Response(status_code=499)  # nobody reads it; nginx's code for "client closed request"
    finally:
        access.note_decision(request, decoded.decision)  # the audit record says what was decided
    placed = finish_outputs(
        decoded,
        response,
        batching=deployment.max_batch_size > 0,
        labels=state.engine.config(model_name).labels,
        regions=state.shared_memory,
    )
    content, headers = encode_response(response, placed)
    content, headers = compress_response(content, headers, request.headers.get("accept-encoding"))
    return Response(content, headers=headers)


@router.get("/metrics", tags=["observability"], response_class=Response, dependencies=access.OPERATOR)
async def metrics(request: Request) -> Response:
    return Response(_state(request).metrics.render(), media_type=CONTENT_TYPE)


# -- model repository --------------------------------------------------------------------------


@router.post(
    "/v2/repository/index", tags=["model repository"], dependencies=access.ADMIN, responses=_errors(400, 413)
)
async def repository_index(request: Request) -> Response:
    options = parse_json_object(await read_body(request, 1 << 16), "repository index")
    rows = _state(request).engine.index()
    if options.get("ready") is True:
        rows = [row for row in rows if row["state"] == "READY"]
    return json_response(rows)


@router.post(
    "/v2/repository/models/{model_name}/load",
    tags=["model repository"],
    dependencies=access.ADMIN,
    responses=_errors(400, 404, 413),
)
async def repository_load(request: Request, model_name: str) -> Response:
    state = _state(request)
    options = parse_json_object(await read_body(request, state.settings.max_body_bytes), "load")
    triton_config, files = load_parameters(options)  # Triton's config and file: overrides
    engine = state.engine
    async with audited(request, "model.load", model_name):
        if not files and model_name not in engine.repository.model_names():
            raise ModelNotFound(model_name)
        uploads = state.settings.state_dir / "uploads"
        await asyncio.to_thread(load_model, engine, model_name, triton_config, files, uploads)
    return json_response({})


@router.post(
    "/v2/repository/models/{model_name}/unload",
    tags=["model repository"],
    dependencies=access.ADMIN,
    responses=_errors(400, 404, 413),
)
async def repository_unload(request: Request, model_name: str) -> Response:
    parse_json_object(await read_body(request, 1 << 16), "unload")
    async with audited(request, "model.unload", model_name):
        await asyncio.to_thread(_state(request).engine.unload, model_name)
    return json_response({})
