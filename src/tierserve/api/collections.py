"""Vector collections over HTTP: ``/v1/collections``. Routes decode, call ``CollectionService``,
encode; errors are V2's ``{"error": "..."}``. Collections belong to the caller's tenant.

POST   /v1/collections                       create {name, dimension | model, metric, precision}
GET    /v1/collections                       the tenant's collections
GET    /v1/collections/{name}                one collection (count, index memory)
DELETE /v1/collections/{name}
POST   /v1/collections/{name}/upsert         {items: [{id, vector | text, metadata}], model?}
POST   /v1/collections/{name}/delete         {ids: [...]} or {filter: {...}}
GET    /v1/collections/{name}/items/{id}     vector, metadata, text
POST   /v1/collections/{name}/search         {vector | text, k, filter, min_similarity, rerank}
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tierserve.api.auth import access
from tierserve.api.auth.access import audited, guarded, own_tenant
from tierserve.api.body import read_body
from tierserve.api.openai import tier_hint
from tierserve.api.responses import error_docs, json_body_doc, json_response
from tierserve.protocol.codec import parse_json_object
from tierserve.retrieval.service import CollectionService

if TYPE_CHECKING:
    from tierserve.api.app import AppState

router = APIRouter(tags=["collections"])

BASE = "/v1/collections"
SEARCH_PATH = BASE + "/{name}/search"
MAX_BODY_BYTES = 64 << 20  # 10,000 items of 768 floats as JSON fit

_FILTER = {
    "type": "object",
    "description": "MongoDB-style: {field: value}, $eq $ne $gt $gte $lt $lte $in $nin",
}
_CREATE = json_body_doc(
    {
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": {"type": "string"},
            "dimension": {"type": "integer", "minimum": 1},
            "metric": {"type": "string", "enum": ["cosine", "dot", "l2"]},
            "precision": {"type": "string", "enum": ["f32", "f16", "i8"]},
            "model": {"type": "string", "description": "embedding model for items and queries given as text"},
        },
    }
)
_UPSERT = json_body_doc(
    {
        "type": "object",
        "required": ["items"],
        "properties": {
            "items": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["id"],
                    "properties": {
                        "id": {"type": "string"},
                        "vector": {"type": "array", "items": {"type": "number"}},
                        "text": {"type": "string"},
                        "metadata": {"type": "object"},
                    },
                },
            },
            "model": {"type": "string"},
            "tier": {"type": "string"},
        },
    }
)
_DELETE = json_body_doc(
    {
        "type": "object",
        "properties": {"ids": {"type": "array", "items": {"type": "string"}}, "filter": _FILTER},
    }
)
_SEARCH = json_body_doc(
    {
        "type": "object",
        "properties": {
            "vector": {"type": "array", "items": {"type": "number"}},
            "text": {"type": "string"},
            "k": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 10},
            "filter": _FILTER,
            "min_similarity": {"type": "number"},
            "rerank": {"description": 'true or "exact", or {"model": <cross-encoder>, "candidates": N}'},
            "model": {"type": "string"},
            "tier": {"type": "string"},
            "include_vectors": {"type": "boolean"},
            "ef": {
                "type": "integer",
                "minimum": 1,
                "maximum": 4096,
                "description": "graph candidates (recall)",
            },
        },
    }
)


def _service(request: Request) -> CollectionService:
    state: AppState = request.app.state.tierserve
    return state.collections


def _tenant(request: Request) -> str:
    return own_tenant(request) or ""


async def _body(request: Request, what: str) -> dict[str, Any]:
    return dict(parse_json_object(await read_body(request, MAX_BODY_BYTES), what))


@router.post(BASE, openapi_extra=_CREATE, dependencies=access.USER, responses=error_docs(400, 404, 409, 413))
async def create_collection(request: Request) -> Response:
    body = await _body(request, "collection")
    async with audited(request, "collection.create", str(body.get("name"))):
        created = _service(request).create(_tenant(request), body)
    return json_response(created, 201, {"Location": f"{BASE}/{created['name']}"})


@router.get(BASE, dependencies=access.READER)
async def list_collections(request: Request) -> Response:
    return json_response({"collections": _service(request).listing(_tenant(request))})


@router.get(BASE + "/{name}", dependencies=access.READER, responses=error_docs(404))
async def describe_collection(request: Request, name: str) -> Response:
    return json_response(_service(request).describe(_tenant(request), name))


@router.delete(BASE + "/{name}", dependencies=access.USER, responses=error_docs(404))
async def delete_collection(request: Request, name: str) -> Response:
    async with audited(request, "collection.delete", name):
        _service(request).drop(_tenant(request), name)
    return json_response({"deleted": name})


@router.post(
    BASE + "/{name}/upsert",
    openapi_extra=_UPSERT,
    dependencies=access.USER,
    responses=error_docs(400, 404, 413, 503),
)
async def upsert_items(request: Request, name: str) -> Response:
    body = await _body(request, "upsert")
    hint = tier_hint(request, body)
    return json_response(await _service(request).upsert(_tenant(request), name, body, hint))


@router.post(
    BASE + "/{name}/delete",
    openapi_extra=_DELETE,
    dependencies=access.USER,
    responses=error_docs(400, 404, 413),
)
async def delete_items(request: Request, name: str) -> Response:
    body = await _body(request, "delete")
    return json_response(await _service(request).delete(_tenant(request), name, body))


@router.get(BASE + "/{name}/items/{item_id}", dependencies=access.READER, responses=error_docs(404))
async def get_item(request: Request, name: str, item_id: str) -> Response:
    return json_response(_service(request).get(_tenant(request), name, item_id))


async def search_endpoint(request: Request) -> Response:
    return await search(request, request.path_params["name"])


# The search path as a plain route ahead of the included routers (see api/app.py), for speed.
HOT_ROUTES = [
    Route(SEARCH_PATH, guarded(access.USER, search_endpoint), methods=["POST"], include_in_schema=False)
]


@router.post(
    SEARCH_PATH, openapi_extra=_SEARCH, dependencies=access.USER, responses=error_docs(400, 404, 413, 503)
)
async def search(request: Request, name: str) -> Response:
    """Nearest items to a vector or a text (embedded by the collection's model), filtered by
    metadata, above ``min_similarity``, optionally re-ranked; every request returns ``k`` results
    when ``k`` items match the filter."""
    body = await _body(request, "search")
    hint = tier_hint(request, body)
    return json_response(await _service(request).search(_tenant(request), name, body, hint))
