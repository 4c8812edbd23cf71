"""``remote``: another Open Inference Protocol server (tierserve, Triton, KServe, MLServer) as a backend.

Batches go out as one V2 request with Triton's binary tensor extension when the peer supports it
(it says so in its server metadata ``extensions``; MLServer does not), JSON tensors otherwise,
through a pooled async HTTP client that runs on an event loop of its own thread: replica threads
hand it a request and wait for the answer, so the pool's concurrency is its replica count. Each
endpoint has a circuit breaker and a health check (``/v2/health/ready``) every few seconds;
endpoints are used round robin among the healthy ones.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
import numpy as np

from tierserve.errors import InferenceFailed, InvalidInput, Unavailable
from tierserve.protocol.client import NotJson, decode_response, encode_request
from tierserve.protocol.tensors import HEADER_LENGTH
from tierserve.repository.signature import Signature
from tierserve.router.breaker import BreakerState, CircuitBreaker

log = logging.getLogger(__name__)

T = TypeVar("T")
HEALTH_INTERVAL_S = 2.0


class RemoteUnavailable(Unavailable):
    """The peer could not be reached or answered with a server error: worth retrying elsewhere, and
    counted against the pool's circuit breaker."""

    blames_backend = True


class NotRepresentable(Unavailable):
    """The batch cannot travel to this peer as JSON (infinities, bytes that are not UTF-8): it goes
    to another pool, and the peer is not blamed for it."""


@dataclass
class _Endpoint:
    url: str
    breaker: CircuitBreaker = field(
        default_factory=lambda: CircuitBreaker(failure_threshold=3, cooldown_s=2.0)
    )
    healthy: bool = True
    binary: bool = True


class RemoteBackend:
    kind = "remote"

    def __init__(
        self,
        endpoints: tuple[str, ...],
        model: str,
        signature: Signature,
        *,
        concurrency: int,
        timeout_s: float,
    ) -> None:
        self.signature = signature
        self._model = model
        self._timeout_s = timeout_s
        self._endpoints = [_Endpoint(url) for url in endpoints]
        self._turn = itertools.count()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"remote-{model}", daemon=True)
        self._thread.start()
        limits = httpx.Limits(
            max_connections=concurrency * len(endpoints), max_keepalive_connections=concurrency
        )
        self._client: httpx.AsyncClient = self._call(_make_client(limits, timeout_s))
        for endpoint in self._endpoints:
            self._call(self._check(endpoint))
        self._health = asyncio.run_coroutine_threadsafe(self._health_loop(), self._loop)

    def available(self) -> bool:
        now = time.monotonic()
        return any(e.healthy and e.breaker.allows(now) for e in self._endpoints)

    def endpoint_states(self) -> list[tuple[str, BreakerState]]:
        """Each endpoint's URL and its circuit breaker's state (for metrics)."""
        return [(e.url, e.breaker.state) for e in self._endpoints]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self._call(self._infer(feeds), timeout=self._timeout_s + 1.0)

    def close(self) -> None:
        self._health.cancel()
        self._call(self._client.aclose())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5.0)

    # -- on the backend's own loop -------------------------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float | None = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _pick(self) -> _Endpoint:
        now = time.monotonic()
        n = len(self._endpoints)
        start = next(self._turn)
        for i in range(n):
            endpoint = self._endpoints[(start + i) % n]
            if endpoint.healthy and endpoint.breaker.acquire(now):
                return endpoint
        raise RemoteUnavailable(f"no healthy endpoint for model '{self._model}'")

    async def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        # Encode before taking an endpoint: a half-open breaker's probe must end in an outcome.
        binary = all(e.binary for e in self._endpoints)
        body, headers = self._encode(feeds, binary)
        endpoint = self._pick()
        if endpoint.binary != binary:
            body, headers = self._encode(feeds, endpoint.binary)
        url = f"{endpoint.url}/v2/models/{self._model}/infer"
        try:
            response = await self._client.post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            endpoint.breaker.record_failure(time.monotonic())
            raise RemoteUnavailable(f"{endpoint.url}: {type(exc).__name__}: {exc}") from exc
        if response.status_code >= 500:
            endpoint.breaker.record_failure(time.monotonic())
            raise RemoteUnavailable(f"{endpoint.url} answered {response.status_code}: {response.text[:200]}")
        endpoint.breaker.record_success(time.monotonic())
        if response.status_code != 200:
            raise InferenceFailed(
                f"{endpoint.url} refused the batch ({response.status_code}): {response.text[:200]}"
            )
        try:
            return decode_response(response.content, response.headers.get(HEADER_LENGTH))
        except InvalidInput as exc:  # the peer's answer, not the caller's request, is at fault
            raise InferenceFailed(
                f"{endpoint.url} answered with no valid V2 response: {exc.message}"
            ) from None

    def _encode(self, feeds: dict[str, np.ndarray], binary: bool) -> tuple[bytes, dict[str, str]]:
        inputs = ((spec.name, spec.datatype, feeds[spec.name]) for spec in self.signature.inputs)
        try:
            return encode_request(inputs, binary=binary)
        except NotJson as exc:
            raise NotRepresentable(str(exc)) from None

    async def _check(self, endpoint: _Endpoint) -> None:
        try:
            # The model's own readiness: a server can be "ready" with the model missing (MLServer).
            ready = await self._client.get(f"{endpoint.url}/v2/models/{self._model}/ready", timeout=2.0)
            endpoint.healthy = ready.status_code == 200
            if endpoint.healthy:
                meta = await self._client.get(f"{endpoint.url}/v2", timeout=2.0)
                endpoint.binary = "binary_tensor_data" in meta.json().get("extensions", [])
        except (httpx.HTTPError, ValueError):
            endpoint.healthy = False

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(HEALTH_INTERVAL_S)
            await asyncio.gather(*(self._check(e) for e in self._endpoints))


async def _make_client(limits: httpx.Limits, timeout_s: float) -> httpx.AsyncClient:
    return httpx.AsyncClient(limits=limits, timeout=timeout_s)
