"""OpenAI-compatible routes: ``POST /v1/embeddings``, ``GET /v1/models``, ``GET /v1/models/{model}``.

Errors on these routes take OpenAI's shape, which the ``openai`` client reads::

    {"error": {"message": "...", "type": "invalid_request_error", "param": null, "code": null}}

Beyond OpenAI's fields a request may name its tier (``"tier": "gold"``, or the ``X-Tier`` header,
or its API key's tier) and V2-style ``parameters`` (``priority``, ``timeout``).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from functools import partial
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import APIRouter, Depends
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tierserve.api.auth import access
from tierserve.api.auth.access import Access, apply_key_tier, guarded
from tierserve.api.body import read_body
from tierserve.api.responses import error_docs, json_body_doc
from tierserve.engine.request import InferRequest
from tierserve.errors import InvalidInput, ModelNotFound, TierserveError
from tierserve.protocol.codec import parse_json_object
from tierserve.retrieval.embeddings import Embedded
from tierserve.retrieval.inference import TierHint
from tierserve.security.roles import Role

if TYPE_CHECKING:
    from tierserve.api.app import AppState

router = APIRouter(tags=["openai"])

EMBEDDINGS_PATH = "/v1/embeddings"
MODELS_PATH = "/v1/models"
MAX_BODY_BYTES = 16 << 20
# Embeddings are inference work: capped by the key's concurrency limit and audited like /infer.
EMBED = [Depends(Access(Role.USER, holds_work=True, audit="embeddings"))]


def owns(path: str) -> bool:
    """Whether errors on ``path`` take OpenAI's shape."""
    return path in (EMBEDDINGS_PATH, MODELS_PATH) or path.startswith(MODELS_PATH + "/")


_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_exceeded",
}


def error_response(message: str, status: int, headers: dict[str, str] | None = None) -> Response:
    code = "model_not_found" if status == 404 else None
    error = {
        "message": message,
        "type": _ERROR_TYPES.get(status, "server_error"),
        "param": None,
        "code": code,
    }
    return Response(
        orjson.dumps({"error": error}), status_code=status, headers=headers, media_type="application/json"
    )


_OPENAI_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return error_docs(*codes, schema=_OPENAI_ERROR)


_EMBEDDINGS_DOC = json_body_doc(
    {
        "type": "object",
        "required": ["model", "input"],
        "properties": {
            "model": {"type": "string"},
            "input": {
                "oneOf": [
                    {"type": "string"},
                    {"type": "array", "items": {"type": "string"}},
                    {"type": "array", "items": {"type": "integer"}},
                    {"type": "array", "items": {"type": "array", "items": {"type": "integer"}}},
                ]
            },
            "encoding_format": {"type": "string", "enum": ["float", "base64"]},
            "dimensions": {"type": "integer", "minimum": 1},
            "user": {"type": "string"},
            "tier": {"type": "string"},
            "parameters": {"type": "object"},
        },
    }
)


def _state(request: Request) -> AppState:
    state: AppState = request.app.state.tierserve
    return state


async def embeddings_endpoint(request: Request) -> Response:
    return await embeddings(request)


# Added to the application's own route list ahead of the included routers (see api/app.py).
HOT_ROUTES = [
    Route(EMBEDDINGS_PATH, guarded(EMBED, embeddings_endpoint), methods=["POST"], include_in_schema=False)
]


@router.post(
    EMBEDDINGS_PATH,
    openapi_extra=_EMBEDDINGS_DOC,
    dependencies=EMBED,
    responses=_errors(400, 404, 413, 500, 503),
)
async def embeddings(request: Request) -> Response:
    """Embed text (a string, a list of strings, or token arrays) with a model that declares
    ``embedding`` in its config.yaml; tokenized on the server."""
    state = _state(request)
    body = parse_json_object(await read_body(request, MAX_BODY_BYTES), "embeddings request")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidInput("'model' must name an embedding model (GET /v1/models lists them)")
    encoding = body.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        raise InvalidInput(f"encoding_format must be 'float' or 'base64', got {encoding!r}")
    dimensions = body.get("dimensions")
    if dimensions is not None and (isinstance(dimensions, bool) or not isinstance(dimensions, int)):
        raise InvalidInput("dimensions must be a positive integer")
    hint = tier_hint(request, body)
    service = state.embeddings
    texts, tokens = parse_input(body.get("input"))
    if texts is not None:
        embedded = await service.embed_texts(model, texts, hint, dimensions)
    else:
        assert tokens is not None
        embedded = await service.embed_tokens(model, tokens, hint, dimensions)
    return Response(encode(embedded, encoding), media_type="application/json")


def tier_hint(request: Request, body: Mapping[str, Any]) -> TierHint:
    parameters = body.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise InvalidInput("'parameters' must be an object")
    tier = body.get("tier")
    if tier is not None:
        if not isinstance(tier, str):
            raise InvalidInput("'tier' must be a tier name")
        parameters = {**parameters, "tier": tier}
    decoded = InferRequest(inputs=[], parameters=parameters, tier=request.headers.get("x-tier"))
    apply_key_tier(request, decoded)
    tenant = access.own_tenant(request) or ""
    decided = partial(access.note_decision, request)  # the inference audit record (embeddings)
    return TierHint(decoded.tier, decoded.parameters, tenant, decoded.key_tier, decided)


def parse_input(raw: object) -> tuple[list[str] | None, list[list[int]] | None]:
    """OpenAI's four forms of ``input``: texts, or token rows."""
    if isinstance(raw, str):
        return [raw], None
    if isinstance(raw, list) and raw:
        if all(isinstance(item, str) for item in raw):
            return raw, None
        if all(_is_token(item) for item in raw):
            return None, [raw]
        if all(isinstance(row, list) and all(_is_token(t) for t in row) for row in raw):
            return None, raw
    if raw is None:
        raise InvalidInput("'input' is required: a string, a list of strings, or token arrays")
    if raw == []:
        raise InvalidInput("'input' is empty; give a string, a list of strings or token arrays")
    raise InvalidInput("'input' must be a string, a list of strings, a list of token ids, or a list of those")


def _is_token(item: object) -> bool:
    return isinstance(item, int) and not isinstance(item, bool)


def encode(embedded: Embedded, encoding: str) -> bytes:
    vectors = embedded.vectors
    if encoding == "base64":
        little = vectors.astype("<f4", copy=False)
        items: list[Any] = [base64.b64encode(row.tobytes()).decode("ascii") for row in little]
    else:
        items = list(vectors)  # numpy rows: orjson writes them without a Python list per float
    data = [{"object": "embedding", "index": i, "embedding": item} for i, item in enumerate(items)]
    usage = {"prompt_tokens": embedded.tokens, "total_tokens": embedded.tokens}
    return orjson.dumps(
        {"object": "list", "data": data, "model": embedded.model, "usage": usage},
        option=orjson.OPT_SERIALIZE_NUMPY,
    )


def _model_card(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "tierserve"}


@router.get(MODELS_PATH, dependencies=access.READER, responses=_errors(404))
async def list_models(request: Request) -> Response:
    """The models that embed text (OpenAI's model list)."""
    names = _state(request).embeddings.models.embedder_names()
    return Response(
        orjson.dumps({"object": "list", "data": [_model_card(n) for n in names]}),
        media_type="application/json",
    )


@router.get(MODELS_PATH + "/{model}", dependencies=access.READER, responses=_errors(404))
async def retrieve_model(request: Request, model: str) -> Response:
    if model not in _state(request).embeddings.models.embedder_names():
        raise ModelNotFound(model)
    return Response(orjson.dumps(_model_card(model)), media_type="application/json")


def render_error(exc: TierserveError) -> Response:
    return error_response(exc.message, exc.status_code, exc.headers())
