"""Response helpers: ``application/json`` exactly, and the V2 error body."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import orjson
from starlette.responses import Response

from tierserve.errors import TierserveError


def json_response(content: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(content), status_code=status_code, headers=headers, media_type="application/json"
    )


def error_response(exc: TierserveError) -> Response:
    return json_response({"error": exc.message}, exc.status_code, exc.headers())


def json_body_doc(schema: dict[str, Any]) -> dict[str, Any]:
    """``openapi_extra`` for a route that reads its JSON body itself (no pydantic model): the schema."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


V2_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"error": {"type": "string"}},
    "required": ["error"],
}


def error_docs(*codes: int, schema: dict[str, Any] = V2_ERROR_SCHEMA) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error body at these statuses (every status a route can answer is
    documented: the schemathesis suite checks it)."""
    return {
        code: {"description": HTTPStatus(code).phrase, "content": {"application/json": {"schema": schema}}}
        for code in codes
    }
