"""The OpenAPI document says who may call each operation: security schemes, the role each route
declares (``x-tierserve-role``), and the 401/403/429 answers the checks can give."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute

from tierserve.api.auth.access import Access, all_routes, route_access
from tierserve.security.roles import Role

_ERROR = {"$ref": "#/components/schemas/Error"}
_SCHEMES = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key (tsk_...) or a JWT carrying tenant and role claims.",
    },
    "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
}


def _error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": _ERROR}},
    }
    if headers:
        response["headers"] = headers
    return response


_UNAUTHORIZED = _error(
    "No credentials, or unknown, revoked or expired ones.",
    {"WWW-Authenticate": {"schema": {"type": "string"}}},
)
_FORBIDDEN = _error("The credentials' role is too weak for this operation.")
_RATE_LIMITED = _error(
    "Over the key's or the tenant's rate or concurrency limit.",
    {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}},
)


def install(app: FastAPI) -> None:
    """Mark FastAPI's own documentation routes open, and document access in the OpenAPI schema."""
    for route in all_routes(app):
        if not isinstance(route, APIRoute) and getattr(route, "path", None) in _docs_paths(app):
            # The document describes the API, not its data; clients need it to authenticate at all.
            route.endpoint.access = Access(None)  # type: ignore[attr-defined]
    generate: Callable[[], dict[str, Any]] = app.openapi
    done: dict[str, Any] = {}

    def openapi() -> dict[str, Any]:
        schema = generate()
        if done.get("schema") is not schema:  # FastAPI regenerates when routes change
            document_access(schema, app)
            done["schema"] = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _docs_paths(app: FastAPI) -> set[str]:
    paths = (app.openapi_url, app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url)
    return {path for path in paths if path}


def document_access(schema: dict[str, Any], app: FastAPI) -> None:
    components = schema.setdefault("components", {})
    components.setdefault("securitySchemes", {}).update(_SCHEMES)
    components.setdefault("schemas", {}).setdefault(
        "Error",
        {
            "title": "Error",
            "type": "object",
            "properties": {"error": {"type": "string"}},
            "required": ["error"],
        },
    )
    paths = schema.get("paths", {})
    for route in all_routes(app):
        if not isinstance(route, APIRoute) or not route.include_in_schema:
            continue
        access = route_access(route)
        for method in route.methods or ():
            operation = paths.get(route.path_format, {}).get(method.lower())
            if operation is None:
                continue
            if access is None or access.role is None:
                operation["security"] = []
                operation["x-tierserve-role"] = "public"
                continue
            operation["x-tierserve-role"] = str(access.role)
            operation["security"] = [{"bearer": []}, {"apiKey": []}]
            responses = operation.setdefault("responses", {})
            responses.setdefault("401", _UNAUTHORIZED)
            if access.role > Role.READER:
                responses.setdefault("403", _FORBIDDEN)
            responses.setdefault("429", _RATE_LIMITED)
