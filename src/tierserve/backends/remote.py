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
import orjson

from tierserve.datatypes import from_name
from tierserve.errors import InferenceFailed, Unavailable
from tierserve.repository.signature import Signature
from tierserve.router.breaker import BreakerState, CircuitBreaker
from tierserve.wire import tensor_from_bytes, tensor_to_bytes

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
        body, headers = encode_request(self.signature, feeds, binary=binary)
        endpoint = self._pick()
        if endpoint.binary != binary:
            body, headers = encode_request(self.signature, feeds, binary=endpoint.binary)
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
        return decode_response(response.content, response.headers.get("inference-header-content-length"))

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


def encode_request(
    signature: Signature, feeds: dict[str, np.ndarray], *, binary: bool
) -> tuple[bytes, dict[str, str]]:
    """A V2 infer request for ``feeds``; binary tensors (and binary outputs) when ``binary``."""
    inputs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for spec in signature.inputs:
        array = feeds[spec.name]
        entry: dict[str, Any] = {
            "name": spec.name,
            "datatype": spec.datatype.name,
            "shape": list(array.shape),
        }
        if binary:
            blob = tensor_to_bytes(array, spec.datatype)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = _json_data(spec.name, array)
        inputs.append(entry)
    doc = {"inputs": inputs, "parameters": {"binary_data_output": binary}}
    header = orjson.dumps(doc)
    if not binary:
        return header, {"content-type": "application/json"}
    return header + b"".join(blobs), {
        "inference-header-content-length": str(len(header)),
        "content-type": "application/octet-stream",
    }


def decode_response(body: bytes, header_length: str | None) -> dict[str, np.ndarray]:
    """The outputs of a V2 infer response, JSON or binary."""
    length = int(header_length) if header_length is not None else len(body)
    doc = orjson.loads(body[:length])
    view, offset = memoryview(body), length
    outputs: dict[str, np.ndarray] = {}
    for output in doc.get("outputs", []):
        datatype = from_name(output["datatype"])
        shape = tuple(output["shape"])
        size = (output.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            outputs[output["name"]] = tensor_from_bytes(
                view[offset : offset + size], datatype, shape, output["name"]
            )
            offset += size
        elif datatype.kind == "bytes":
            outputs[output["name"]] = np.array([s.encode() for s in output["data"]], dtype=object).reshape(
                shape
            )
        else:
            outputs[output["name"]] = np.asarray(output["data"], dtype=datatype.numpy).reshape(shape)
    return outputs


def _json_data(name: str, array: np.ndarray) -> list[Any]:
    """Tensor data as JSON values, refusing what JSON would change (inf becomes null, then NaN)."""
    if array.dtype.kind == "f" and np.isinf(array).any():
        raise NotRepresentable(f"input '{name}' holds infinities, which JSON tensors cannot carry")
    if array.dtype.kind == "O":
        try:
            return [x.decode() if isinstance(x, bytes) else x for x in array.ravel().tolist()]
        except UnicodeDecodeError:
            raise NotRepresentable(f"input '{name}' holds bytes that are not UTF-8 text") from None
    data: list[Any] = array.ravel().tolist()
    return data
