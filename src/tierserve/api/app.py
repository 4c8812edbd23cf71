"""The FastAPI application: lifespan (model loading), error handling, routers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from tierserve import __version__
from tierserve.api import v2
from tierserve.api.responses import error_response, json_response
from tierserve.config import ServerSettings
from tierserve.engine.engine import Engine
from tierserve.errors import InvalidInput, TierserveError
from tierserve.observability.metrics import Metrics
from tierserve.repository.repository import ModelRepository
from tierserve.scheduler.tiers import TierTable

log = logging.getLogger(__name__)


@dataclass
class AppState:
    """What routes reach through ``request.app.state.tierserve``."""

    settings: ServerSettings
    engine: Engine
    metrics: Metrics


def create_app(settings: ServerSettings) -> FastAPI:
    metrics = Metrics()
    engine = Engine(
        ModelRepository(settings.model_repository),
        metrics,
        TierTable.from_config(_read_config(settings.config_file)),
        honour_tiers=settings.scheduling == "tiers",
    )
    metrics.set_queue_source(engine.queue_snapshots)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Load in the background: /v2/health/live answers at once, /v2/health/ready once loaded.
        loading = asyncio.create_task(asyncio.to_thread(engine.load_all))
        try:
            yield
        finally:
            await asyncio.shield(loading)
            await asyncio.to_thread(engine.stop)

    app = FastAPI(
        title="tierserve",
        version=__version__,
        description="Open Inference Protocol (KServe V2) server with SLO tiers and cost-aware routing.",
        lifespan=lifespan,
    )
    app.state.tierserve = AppState(settings, engine, metrics)
    app.include_router(v2.router)
    _install_error_handlers(app)
    return app


def _read_config(path: Path | None) -> object:
    if path is None:
        return None
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise InvalidInput(f"cannot read server config {path}: {exc}") from exc


def _install_error_handlers(app: FastAPI) -> None:
    async def on_tierserve_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, TierserveError)
        return error_response(exc)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return json_response({"error": str(exc.detail)}, exc.status_code, dict(exc.headers or {}))

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return error_response(InvalidInput(f"invalid request: {exc.errors()}"))

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return json_response({"error": f"internal server error: {type(exc).__name__}"}, 500)

    app.add_exception_handler(TierserveError, on_tierserve_error)
    app.add_exception_handler(HTTPException, on_http_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(Exception, on_unexpected)
