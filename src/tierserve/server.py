"""Running the app under uvicorn with the event loop and parser that keep per-request cost low."""

from __future__ import annotations

import logging
import signal

import uvicorn

from tierserve.api.app import create_app
from tierserve.api.hot import HotPath
from tierserve.config import ServerSettings


def run(settings: ServerSettings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    config = uvicorn.Config(
        HotPath(create_app(settings)),  # inference requests skip FastAPI's middleware and router
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
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
    uvicorn.Server(config).run()
