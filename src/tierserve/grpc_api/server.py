"""Starting and stopping the gRPC server inside the application's event loop (one engine for both
protocols; ONNX Runtime runs outside the GIL, so a second loop would only add hand-offs)."""

from __future__ import annotations

import logging
from pathlib import Path

import grpc

from tierserve.config import ServerSettings
from tierserve.engine.engine import Engine
from tierserve.grpc_api.service import InferenceService, generic_handler
from tierserve.security.service import SecurityService

log = logging.getLogger(__name__)

# RPCs served at once; more are refused with RESOURCE_EXHAUSTED rather than queued without bound.
MAX_CONCURRENT_RPCS = 4096


async def start_grpc(settings: ServerSettings, engine: Engine, security: SecurityService) -> grpc.aio.Server:
    """Serve ``GRPCInferenceService`` on ``settings.host:settings.grpc_port`` (TLS with the REST
    certificate when one is given). Raises OSError when the port cannot be bound."""
    assert settings.grpc_port is not None
    limit = settings.max_body_bytes
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", -1),
            ("grpc.so_reuseport", 0),  # a port already in use fails the start instead of sharing it
        ],
        maximum_concurrent_rpcs=MAX_CONCURRENT_RPCS,
    )
    service = InferenceService(engine, security, limit, strict_readiness=settings.strict_readiness)
    server.add_generic_rpc_handlers((generic_handler(service),))
    address = (
        f"[{settings.host}]:{settings.grpc_port}"
        if ":" in settings.host
        else (f"{settings.host}:{settings.grpc_port}")
    )
    try:
        if settings.ssl_certfile is not None:
            bound = server.add_secure_port(address, _credentials(settings.ssl_certfile, settings.ssl_keyfile))
        else:
            bound = server.add_insecure_port(address)
    except RuntimeError as exc:  # grpcio reports a failed bind this way
        raise OSError(f"cannot serve gRPC on {address}: {exc}") from None
    if bound == 0:
        raise OSError(f"cannot serve gRPC on {address}: the port is in use or the address is invalid")
    await server.start()
    log.info(
        "serving gRPC (GRPCInferenceService) on %s%s", address, " with TLS" if settings.ssl_certfile else ""
    )
    return server


def _credentials(certfile: Path, keyfile: Path | None) -> grpc.ServerCredentials:
    chain = certfile.read_bytes()
    key = keyfile.read_bytes() if keyfile is not None else chain  # the key may share the PEM
    return grpc.ssl_server_credentials([(key, chain)])
