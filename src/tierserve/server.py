"""Running the app under uvicorn with the event loop and parser that keep per-request cost low."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from types import FrameType
from typing import Any

import uvicorn

from tierserve.api.app import AppState, Sidecar, create_app
from tierserve.api.hot import HotPath
from tierserve.config import ServerSettings
from tierserve.connections import default_max_connections, limited_protocol
from tierserve.errors import TierserveError

log = logging.getLogger(__name__)

STARTUP_FAILED = 2  # the exit status when the server could not start (a store, --exit-on-error, the port)


def _sidecars(settings: ServerSettings) -> list[Sidecar]:
    """gRPC beside REST when ``--grpc-port`` is given (grpcio is imported only then)."""
    if not settings.grpc_port:
        return []
    from tierserve.grpc_api.server import start_grpc

    async def grpc_service(state: AppState) -> Callable[[], Awaitable[object]]:
        server = await start_grpc(settings, state.engine, state.security)
        return lambda: server.stop(settings.graceful_shutdown_s)

    return [grpc_service]


def run(settings: ServerSettings) -> int:
    """Serve until SIGINT/SIGTERM; the exit status (0, or ``STARTUP_FAILED``)."""
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    app = create_app(settings, sidecars=_sidecars(settings))
    config = uvicorn.Config(
        # inference requests skip FastAPI's middleware and router; start-up errors are one line
        HotPath(_OneLineStartupErrors(app)),
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http=limited_protocol(
            settings.header_timeout_s,
            settings.body_timeout_s,
            settings.max_connections or default_max_connections(),
        ),
        log_level=settings.log_level,
        access_log=False,
        proxy_headers=False,  # no X-Forwarded-* rewriting on the hot path; terminate proxies in front
        # uvicorn stops accepting on SIGINT/SIGTERM and lets in-flight requests finish first.
        timeout_graceful_shutdown=round(settings.graceful_shutdown_s),
        ssl_certfile=settings.ssl_certfile,  # HTTPS when given (the key may be in the same PEM)
        ssl_keyfile=settings.ssl_keyfile,
    )
    # uvicorn restores the handlers it found and re-raises the signal after its graceful shutdown;
    # finding no-op handlers makes that a normal return, so a clean stop exits 0 without a traceback.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: None)
    server = _Server(config, on_exit=app.state.tierserve.begin_shutdown)
    try:
        server.run()
    except SystemExit:  # uvicorn exits 3 when the app's start-up or the bind fails (it logged why)
        if server.started:
            raise
    return 0 if server.started else STARTUP_FAILED


class _Server(uvicorn.Server):
    """uvicorn's server, which also tells the app as soon as a stop signal arrives: job workers
    stop leasing and event streams end, instead of holding the graceful shutdown for its timeout."""

    def __init__(self, config: uvicorn.Config, *, on_exit: Any) -> None:
        super().__init__(config)
        self._on_exit = on_exit
        self._told = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if not self._told:
            self._told = True
            with contextlib.suppress(RuntimeError):  # no loop running (yet): nothing to tell
                asyncio.get_running_loop().call_soon_threadsafe(self._on_exit)
        super().handle_exit(sig, frame)


class _OneLineStartupErrors:
    """An ASGI wrapper that reports a start-up failure that tierserve explains (a corrupt store,
    --exit-on-error) as its one-line message instead of a traceback."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def __getattr__(self, name: str) -> Any:  # handlers reach app.state (and the rest) through it
        return getattr(self.app, name)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def reporting_send(message: Any) -> None:
            if message.get("type") == "lifespan.startup.failed":
                exc = sys.exc_info()[1]
                if isinstance(exc, TierserveError):
                    message = {**message, "message": f"tierserve cannot start: {exc.message}"}
            await send(message)

        await self.app(scope, receive, reporting_send)
