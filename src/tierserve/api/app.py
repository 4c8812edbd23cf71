"""The FastAPI application: lifespan (model loading), error handling, routers."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from tierserve import __version__
from tierserve.api import admin, collections, jobs, openai, rollouts, shared_memory_routes, v1, v2
from tierserve.api.auth import openapi
from tierserve.api.body import BodyReader
from tierserve.api.responses import error_response, json_response
from tierserve.api.shared_memory import SystemSharedMemory
from tierserve.cache import ResultCacheService
from tierserve.config import ServerSettings, load_server_config
from tierserve.engine.autoscaling import LiveAutoscaler
from tierserve.engine.engine import Engine
from tierserve.engine.factory import build_engine
from tierserve.engine.health import GpuMetrics, engine_state_metrics
from tierserve.errors import InvalidInput, TierserveError, Unavailable
from tierserve.jobs.service import JobService
from tierserve.observability.exporter import start_exporter
from tierserve.observability.metrics import Metrics
from tierserve.releases.service import RolloutService
from tierserve.releases.store import open_rollout_store
from tierserve.retrieval.embeddings import EmbeddingService
from tierserve.retrieval.service import CollectionService
from tierserve.security.service import SecurityService
from tierserve.security.usage import UsageSync

log = logging.getLogger(__name__)

STORE_RETRY_AFTER_S = 5.0


@dataclass
class AppState:
    """What routes reach through ``request.app.state.tierserve``."""

    settings: ServerSettings
    engine: Engine
    metrics: Metrics
    jobs: JobService
    autoscaler: LiveAutoscaler
    security: SecurityService
    embeddings: EmbeddingService
    usage: UsageSync
    collections: CollectionService
    bodies: BodyReader
    rollouts: RolloutService
    shared_memory: SystemSharedMemory = field(default_factory=SystemSharedMemory)

    def begin_shutdown(self) -> None:
        """The server got SIGTERM/SIGINT: stop taking jobs and end event streams now."""
        self.jobs.begin_shutdown()


# Another protocol served beside REST from the same state (gRPC: ``tierserve.server`` passes it, so
# this layer never imports the one above it): started once the app is up; what it returns stops it.
Sidecar = Callable[["AppState"], Awaitable[Callable[[], Awaitable[object]]]]


def create_app(settings: ServerSettings, *, sidecars: Sequence[Sidecar] = ()) -> FastAPI:
    metrics = Metrics()
    server_config = load_server_config(settings.config_file)
    engine = build_engine(settings, server_config, metrics)
    metrics.set_queue_source(engine.queue_snapshots)
    cache = ResultCacheService.install(
        engine, metrics.registry, settings.cache_bytes, settings.cache_redis or settings.redis
    )
    metrics.add_source(lambda: engine_state_metrics(engine))
    metrics.add_source(GpuMetrics(engine).collect)
    security = SecurityService.from_settings(settings, server_config, metrics.registry, engine.tiers)
    usage = UsageSync(security.store, engine.budgeting.book)
    metrics.add_source(usage.metric_families)
    job_service = JobService.from_settings(settings, engine)
    metrics.add_source(job_service.metric_families)
    rollout_service = RolloutService(
        open_rollout_store(settings.database, settings.state_dir), engine, metrics.registry,
        audit=rollouts.auditor(security),
    )  # fmt: skip
    autoscaler = LiveAutoscaler(
        engine, metrics, actuate=settings.autoscale == "local", interval_s=settings.autoscale_interval_s
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        exporter = None
        if settings.metrics_port:
            host = settings.metrics_host or settings.host
            exporter = start_exporter(metrics.registry, host, settings.metrics_port)
        await security.open()  # keys loaded before the first request; closed until then
        security.start()
        await usage.sync()  # budgets start from what was spent before this start (and by other servers)
        syncing = asyncio.create_task(usage.run(), name="budget-usage")

        async def shut_down() -> None:
            """Every step runs even when one before it fails (a failed step skipped the job-lease
            release and the audit flush): jobs first (running jobs finish or are given back), then
            the engine, and security last (it flushes the audit records of the final requests)."""
            syncing.cancel()
            steps: list[tuple[str, Callable[[], Awaitable[object]]]] = [
                ("the job service", job_service.stop),
                ("collections", lambda: asyncio.to_thread(collection_service.close)),  # quick next start
                ("rollouts", rollout_service.stop),
                ("the engine", lambda: asyncio.to_thread(engine.stop)),
                ("the result cache", cache.close),
                ("budget usage", usage.sync),
                ("security (audit flush)", security.stop),
            ]
            for what, step in steps:
                try:
                    await step()
                except Exception:
                    log.exception("stopping %s failed during shutdown", what)
            if exporter is not None:
                exporter.close()
            app.state.tierserve.shared_memory.close()

        await job_service.open()  # an unreachable job database fails the start, not the first job
        await cache.open()  # follows generations from here on; Redis down is no reason to fail
        # Load in the background: /v2/health/live answers at once, /v2/health/ready once loaded.
        loading = asyncio.create_task(asyncio.to_thread(engine.load_all))
        if settings.exit_on_error:  # Triton's --exit-on-error: every model loads, or the server exits
            await asyncio.shield(loading)
            failed = engine.not_ready_reasons()
            if failed:
                await shut_down()
                raise InvalidInput("; ".join(failed) + " (--exit-on-error)")
        job_service.start(loading)  # job workers begin once the models are loaded
        await rollout_service.open()  # stored rollouts route from the first request
        rollout_service.start(loading)
        scaling = asyncio.create_task(autoscaler.run()) if settings.autoscale != "off" else None
        stops = [await start(app.state.tierserve) for start in sidecars]
        try:
            yield
        finally:
            for stop in stops:
                await stop()  # in-flight calls finish first
            if scaling is not None:
                scaling.cancel()
            await asyncio.shield(loading)  # load_all never raises
            await shut_down()

    app = FastAPI(
        title="tierserve",
        version=__version__,
        description="Open Inference Protocol (KServe V2) server with SLO tiers and cost-aware routing.",
        lifespan=lifespan,
    )
    embeddings = EmbeddingService(engine)
    collection_service = CollectionService(settings.state_dir, embeddings)
    metrics.add_source(collection_service.metric_families)
    app.state.tierserve = AppState(
        settings=settings,
        engine=engine,
        metrics=metrics,
        jobs=job_service,
        autoscaler=autoscaler,
        security=security,
        embeddings=embeddings,
        usage=usage,
        collections=collection_service,
        bodies=BodyReader(settings.max_body_bytes, settings.max_decoding_bytes),
        rollouts=rollout_service,
    )
    # The hot paths first, as plain routes of the application itself: FastAPI's included routers
    # cost a match over every route they hold (8% of the event loop's time in a profile).
    app.router.routes[0:0] = [*v2.HOT_ROUTES, *jobs.HOT_ROUTES, *openai.HOT_ROUTES, *collections.HOT_ROUTES]
    app.include_router(jobs.router)
    app.include_router(v2.router)
    app.include_router(shared_memory_routes.router)
    app.include_router(v1.router)
    app.include_router(openai.router)
    app.include_router(collections.router)
    app.include_router(admin.router)
    app.include_router(rollouts.router)
    openapi.install(app)
    _install_error_handlers(app)
    return app


def _install_error_handlers(app: FastAPI) -> None:
    # The OpenAI-compatible routes answer errors in OpenAI's shape; every other route in V2's.
    async def on_tierserve_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, TierserveError)
        if openai.owns(request.url.path):
            return openai.render_error(exc)
        return error_response(exc)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if openai.owns(request.url.path):
            return openai.error_response(str(exc.detail), exc.status_code, dict(exc.headers or {}))
        return json_response({"error": str(exc.detail)}, exc.status_code, dict(exc.headers or {}))

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return await on_tierserve_error(request, InvalidInput(f"invalid request: {exc.errors()}"))

    async def on_store_error(request: Request, exc: Exception) -> Response:
        # An embedded store that fails under a request (locked by another process, a disk error,
        # pages corrupted since the start): the caller may retry; nothing was stored half-way.
        reason = f"a store of this server failed ({type(exc).__name__}: {exc}); retry later"
        log.error("%s %s: %s", request.method, request.url.path, reason)
        return await on_tierserve_error(request, Unavailable(reason, retry_after_s=STORE_RETRY_AFTER_S))

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        message = f"internal server error: {type(exc).__name__}"
        if openai.owns(request.url.path):
            return openai.error_response(message, 500)
        return json_response({"error": message}, 500)

    app.add_exception_handler(TierserveError, on_tierserve_error)
    app.add_exception_handler(HTTPException, on_http_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(sqlite3.Error, on_store_error)
    app.add_exception_handler(Exception, on_unexpected)
