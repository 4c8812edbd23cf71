"""``inference.GRPCInferenceService``: thin handlers over the engine, as the REST routes are.

Each RPC needs the role its REST twin needs (``ROLES``); credentials travel as metadata
(``authorization: Bearer <key or JWT>`` or ``x-api-key``), the tier as the ``tier`` parameter,
Triton's ``priority``/``timeout`` parameters or ``x-tier`` metadata. Errors become gRPC status codes
as Triton maps its own (``STATUS_CODES``), with the V2 error text as the details, and ``retry-after``
in the trailing metadata where REST would send the header.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn

import grpc
from google.protobuf import json_format

from tierserve.api import documents
from tierserve.api.auth import access
from tierserve.api.auth.access import Access, apply_identity_tier, audited_by
from tierserve.api.model_control import load_model, load_parameters
from tierserve.api.outputs import finish_outputs
from tierserve.engine.engine import Engine
from tierserve.engine.request import Decision, InferRequest
from tierserve.errors import ModelNotFound, TierserveError
from tierserve.grpc_api import messages, tensors
from tierserve.grpc_api.tensors import parameter_value
from tierserve.rollout.split import RouteKeys
from tierserve.security.identity import Identity
from tierserve.security.service import SecurityService

log = logging.getLogger(__name__)

# HTTP status of a TierserveError -> gRPC code (Triton: INVALID_ARG -> INVALID_ARGUMENT, etc.).
STATUS_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.ALREADY_EXISTS,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    499: grpc.StatusCode.CANCELLED,
    501: grpc.StatusCode.UNIMPLEMENTED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}

# The role of each RPC: that of the REST route it mirrors.
ROLES: dict[str, Access] = {
    "ServerLive": Access(None),
    "ServerReady": Access(None),
    "ModelReady": access.READER[0].dependency,
    "ServerMetadata": access.READER[0].dependency,
    "ModelMetadata": access.READER[0].dependency,
    "ModelConfig": access.READER[0].dependency,
    "ModelStatistics": access.OPERATOR[0].dependency,
    "ModelInfer": access.INFER[0].dependency,
    "ModelStreamInfer": access.INFER[0].dependency,
    "RepositoryIndex": access.ADMIN[0].dependency,
    "RepositoryModelLoad": access.ADMIN[0].dependency,
    "RepositoryModelUnload": access.ADMIN[0].dependency,
}

# Stream requests a stream runs at once; the next one is read when one finishes (bounded memory).
STREAM_IN_FLIGHT = 64


def status_code(exc: BaseException) -> grpc.StatusCode:
    if isinstance(exc, TierserveError):
        return STATUS_CODES.get(exc.status_code, grpc.StatusCode.INTERNAL)
    return grpc.StatusCode.INTERNAL


def error_message(exc: BaseException) -> str:
    if isinstance(exc, TierserveError):
        return exc.message
    return f"internal server error: {type(exc).__name__}"


async def abort(context: grpc.aio.ServicerContext[Any, Any], exc: BaseException) -> NoReturn:
    if not isinstance(exc, TierserveError):
        log.error("unhandled error in a gRPC call", exc_info=exc)
    trailing: tuple[tuple[str, str], ...] = ()
    if isinstance(exc, TierserveError):
        trailing = tuple((k.lower(), v) for k, v in exc.headers().items())
    await context.abort(status_code(exc), error_message(exc), trailing)
    raise AssertionError("context.abort returned")  # it raises; this tells the type checker


def _metadata(context: grpc.aio.ServicerContext[Any, Any]) -> dict[str, str]:
    found: dict[str, str] = {}
    for key, value in context.invocation_metadata() or ():
        if isinstance(value, str):
            found[key] = value
    return found


class InferenceService:
    """The handlers of every RPC, bound to one server's engine and security."""

    def __init__(
        self, engine: Engine, security: SecurityService, max_body_bytes: int, *, strict_readiness: bool = True
    ) -> None:
        self.engine = engine
        self.security = security
        self.max_body_bytes = max_body_bytes
        self.strict_readiness = strict_readiness  # as --strict-readiness for /v2/health/ready

    # -- access -----------------------------------------------------------------------------------

    async def _guarded(
        self,
        rpc: str,
        metadata: dict[str, str],
        work: Callable[[Identity | None], Awaitable[Any]],
        model: str | None = None,
        version: str | None = None,
        decided: Callable[[], Decision | None] | None = None,
    ) -> Any:
        """Run ``work`` as the REST guard runs a route: authenticate, authorise, count the rate and
        the concurrency slots, audit inference (with what ``decided`` says the engine decided for
        it); raises TierserveError (or the work's own error)."""
        role = ROLES[rpc]
        guard = self.security.guard
        if role.role is None or not guard.enabled:
            return await work(None)
        async with self.security.call(model=model, version=version or None) as note:
            try:
                authorization, api_key = metadata.get("authorization"), metadata.get("x-api-key")
                identity = await role.check(guard, authorization, api_key, note)
                result = await work(identity)
                note.status = 200
                return result
            finally:
                note.decision = decided() if decided is not None else None

    async def _unary(
        self,
        rpc: str,
        context: grpc.aio.ServicerContext[Any, Any],
        work: Callable[[Identity | None], Awaitable[Any]],
        model: str | None = None,
        version: str | None = None,
    ) -> Any:
        try:
            return await self._guarded(rpc, _metadata(context), work, model, version)
        except Exception as exc:
            await abort(context, exc)

    # -- health and metadata ----------------------------------------------------------------------

    async def server_live(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        return messages.ServerLiveResponse(live=True)

    async def server_ready(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        ready = not self.engine.not_ready_reasons(strict=self.strict_readiness)
        return messages.ServerReadyResponse(ready=ready)

    async def model_ready(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        async def work(identity: Identity | None) -> Any:
            try:
                documents.check_model_ready(self.engine, request.name, request.version or None)
            except TierserveError:  # unknown or not loaded: Triton answers ready=false, not an error
                return messages.ModelReadyResponse(ready=False)
            return messages.ModelReadyResponse(ready=True)

        return await self._unary("ModelReady", context, work, request.name, request.version)

    async def server_metadata(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        async def work(identity: Identity | None) -> Any:
            return messages.ServerMetadataResponse(**documents.server_metadata(documents.GRPC_EXTENSIONS))

        return await self._unary("ServerMetadata", context, work)

    async def model_metadata(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        async def work(identity: Identity | None) -> Any:
            doc = documents.model_metadata(self.engine, request.name, request.version or None)
            return json_format.ParseDict(doc, messages.ModelMetadataResponse(), ignore_unknown_fields=True)

        return await self._unary("ModelMetadata", context, work, request.name, request.version)

    async def model_config(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        async def work(identity: Identity | None) -> Any:
            doc = documents.model_config(self.engine, request.name, request.version or None)
            # Fields of Triton's ModelConfig that inference.proto leaves out are dropped, not an error.
            return json_format.ParseDict(
                {"config": doc}, messages.ModelConfigResponse(), ignore_unknown_fields=True
            )

        return await self._unary("ModelConfig", context, work, request.name, request.version)

    async def model_statistics(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        async def work(identity: Identity | None) -> Any:
            rows = self.engine.stats(request.name or None, request.version or None)
            return json_format.ParseDict(
                {"model_stats": rows}, messages.ModelStatisticsResponse(), ignore_unknown_fields=True
            )

        return await self._unary("ModelStatistics", context, work, request.name or None, request.version)

    # -- model repository -------------------------------------------------------------------------

    async def repository_index(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        async def work(identity: Identity | None) -> Any:
            rows = self.engine.index()
            if request.ready:
                rows = [row for row in rows if row["state"] == "READY"]
            return messages.RepositoryIndexResponse(models=[dict(row) for row in rows])

        return await self._unary("RepositoryIndex", context, work)

    async def repository_model_load(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        async def work(identity: Identity | None) -> Any:
            # Triton's overrides: "config" (string_param, JSON) and "file:<path>" (bytes_param)
            options = {
                "parameters": {key: parameter_value(value) for key, value in request.parameters.items()}
            }
            triton_config, files = load_parameters(options)
            name = request.model_name
            async with audited_by(self.security, identity, "model.load", name):
                if not files and name not in self.engine.repository.model_names():
                    raise ModelNotFound(name)
                uploads = self.engine.state_dir / "uploads"
                await asyncio.to_thread(load_model, self.engine, name, triton_config, files, uploads)
            return messages.RepositoryModelLoadResponse()

        return await self._unary("RepositoryModelLoad", context, work, request.model_name)

    async def repository_model_unload(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        async def work(identity: Identity | None) -> Any:
            async with audited_by(self.security, identity, "model.unload", request.model_name):
                await asyncio.to_thread(self.engine.unload, request.model_name)
            return messages.RepositoryModelUnloadResponse()

        return await self._unary("RepositoryModelUnload", context, work, request.model_name)

    # -- inference --------------------------------------------------------------------------------

    async def _infer(self, rpc: str, request: Any, metadata: dict[str, str]) -> Any:
        decoded: InferRequest | None = None

        async def work(identity: Identity | None) -> Any:
            nonlocal decoded
            deployment = self.engine.deployment(request.model_name, request.model_version or None)
            decoded = tensors.decode_request(request)
            decoded.tier = metadata.get("x-tier")
            apply_identity_tier(identity, decoded)
            decoded.tenant = identity.tenant if identity is not None else ""  # cache answers stay in a tenant
            decoded.routing = (
                RouteKeys(tenant=decoded.tenant or None, headers=metadata) if self.engine.rollouts else None
            )
            response = await self.engine.infer(deployment, decoded, pinned=bool(request.model_version))
            labels = self.engine.config(request.model_name).labels
            finish_outputs(
                decoded, response, batching=deployment.max_batch_size > 0, labels=labels, regions=None
            )
            return tensors.encode_response(response)

        def decided() -> Decision | None:
            return decoded.decision if decoded is not None else None

        return await self._guarded(rpc, metadata, work, request.model_name, request.model_version, decided)

    async def model_infer(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            return await self._infer("ModelInfer", request, _metadata(context))
        except Exception as exc:
            await abort(context, exc)

    async def model_stream_infer(
        self, requests: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        """Each request of the stream runs as it arrives; responses go back as they finish, matched by
        ``id``; a failed request answers ``error_message`` and the stream goes on, as Triton's does.
        At most STREAM_IN_FLIGHT requests are running or waiting to be sent back: a client that
        sends without reading is not read from either (memory stays bounded)."""
        metadata = _metadata(context)
        done: asyncio.Queue[Any] = asyncio.Queue()  # bounded by ``slots``
        slots = asyncio.Semaphore(STREAM_IN_FLIGHT)
        running: set[asyncio.Task[None]] = set()

        async def one(request: Any) -> None:
            try:
                response = messages.ModelStreamInferResponse(
                    infer_response=await self._infer("ModelStreamInfer", request, metadata)
                )
            except Exception as exc:
                if not isinstance(exc, TierserveError):
                    log.error("unhandled error in a gRPC stream request", exc_info=exc)
                response = messages.ModelStreamInferResponse(
                    error_message=error_message(exc),
                    infer_response=messages.ModelInferResponse(
                        model_name=request.model_name, model_version=request.model_version, id=request.id
                    ),
                )
            done.put_nowait(response)

        async def read() -> None:
            try:
                async for request in requests:
                    await slots.acquire()  # given back once its response is sent
                    task = asyncio.create_task(one(request))
                    running.add(task)
                    task.add_done_callback(running.discard)
                while running:
                    await asyncio.wait(set(running))
            finally:
                done.put_nowait(None)  # the end of the stream, or of a failed read

        reader = asyncio.create_task(read())
        try:
            while True:
                response = await done.get()
                if response is None:
                    break
                yield response
                slots.release()
            await reader  # a failed read (the client reset the stream) ends the call with its error
        finally:
            reader.cancel()
            for task in list(running):
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader


def generic_handler(service: InferenceService) -> grpc.GenericRpcHandler:
    """The service's RPCs, (de)serialised with the message classes of ``messages``."""
    unary = {
        "ServerLive": service.server_live,
        "ServerReady": service.server_ready,
        "ModelReady": service.model_ready,
        "ServerMetadata": service.server_metadata,
        "ModelMetadata": service.model_metadata,
        "ModelInfer": service.model_infer,
        "ModelConfig": service.model_config,
        "ModelStatistics": service.model_statistics,
        "RepositoryIndex": service.repository_index,
        "RepositoryModelLoad": service.repository_model_load,
        "RepositoryModelUnload": service.repository_model_unload,
    }
    handlers: dict[str, grpc.RpcMethodHandler] = {
        name: grpc.unary_unary_rpc_method_handler(
            method,
            request_deserializer=messages.request_class(name).FromString,
            response_serializer=_serialize,
        )
        for name, method in unary.items()
    }
    handlers["ModelStreamInfer"] = grpc.stream_stream_rpc_method_handler(
        service.model_stream_infer,
        request_deserializer=messages.request_class("ModelStreamInfer").FromString,
        response_serializer=_serialize,
    )
    assert set(handlers) == set(messages.methods()), "every RPC of inference.proto has a handler"
    return grpc.method_handlers_generic_handler(messages.SERVICE, handlers)


def _serialize(message: Any) -> bytes:
    data: bytes = message.SerializeToString()
    return data
