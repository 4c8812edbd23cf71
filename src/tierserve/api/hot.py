"""The inference route's own ASGI entry, in front of the FastAPI application.

Every other request goes through FastAPI: its middleware stack (server errors, exception handlers,
body limit, telemetry, exit stack) and router cost about a third of the event loop's time per
inference request in a py-spy profile of the ``simple`` model at c=32, before the route's own code
runs. ``POST /v2/models/{name}[/versions/{version}]/infer`` skips them: it is matched here by
splitting the path, and runs the very endpoint the application's first route holds
(``v2.HOT_ROUTES``, guarded as every route is: auth, limits, audit), with the same error bodies
the application's handlers write. Example::

    uvicorn.run(HotPath(create_app(settings)))
"""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from tierserve.api.responses import error_response, json_response
from tierserve.api.v2 import HOT_ROUTES
from tierserve.errors import TierserveError

log = logging.getLogger(__name__)

_PREFIX = "/v2/models/"
_SUFFIX = "/infer"


def infer_target(path: str) -> dict[str, str] | None:
    """The path parameters of an inference path, or None. Example::

    infer_target("/v2/models/simple/versions/2/infer") == {"model_name": "simple", "model_version": "2"}
    """
    if not (path.startswith(_PREFIX) and path.endswith(_SUFFIX)):
        return None
    parts = path[len(_PREFIX) : -len(_SUFFIX)].split("/")
    if len(parts) == 1 and parts[0]:
        return {"model_name": parts[0]}
    if len(parts) == 3 and parts[1] == "versions" and parts[0] and parts[2]:
        return {"model_name": parts[0], "model_version": parts[2]}
    return None


class HotPath:
    """ASGI app: inference requests straight to their endpoint, the rest to ``app``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.endpoint = HOT_ROUTES[0].endpoint  # both inference paths share one endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            params = infer_target(scope["path"])
            if params is not None:
                scope["app"] = self.app  # what Starlette sets: handlers reach the state through it
                scope["path_params"] = params
                await self._infer(scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _infer(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        try:
            response = await self.endpoint(request)
        except TierserveError as exc:
            response = error_response(exc)
        except Exception as exc:  # as the application's last handler answers it
            log.exception("unhandled error on POST %s", scope["path"])
            response = json_response({"error": f"internal server error: {type(exc).__name__}"}, 500)
        await response(scope, receive, send)
