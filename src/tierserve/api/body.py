"""Reading request bodies under two bounds: the size of one body, and the bytes being decoded at once.

A 62 MB JSON body of numbers grows to about 1 GB of Python objects while it is decoded (measured:
10x for integers, 14x for floats, 22x for short strings), and four such bodies at once took a server
to 2 GB. So every body that gets decoded holds a reservation on one shared ``DecodingBudget`` from
before its first byte is read until its tensors are built: JSON at ``JSON_EXPANSION`` bytes per body
byte, binary tensor data at ``BINARY_EXPANSION``. A body whose reservation alone exceeds the budget
is refused (413) before it is read; one that finds the budget taken by others waits up to
``WAIT_S`` and then gets 503 with Retry-After. Memory for decoding is thus bounded by
``--max-decoding-bytes`` whatever the clients send.

A body that arrives compressed grows its reservation to its decompressed size through
``HeldBody.account`` before it is inflated, so the same bounds hold for what it decompresses to.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import orjson
from starlette.requests import Request

from tierserve.api.compression import iter_decoded
from tierserve.errors import InvalidInput, PayloadTooLarge, Unavailable
from tierserve.protocol.tensors import HEADER_LENGTH

T = TypeVar("T")
log = logging.getLogger(__name__)

JSON_EXPANSION = 24  # bytes of Python objects per byte of JSON, worst case measured (short strings: 22)
BINARY_EXPANSION = 2  # the body, and the arrays made from it (numeric tensors view the body)
BYTES_ELEMENT_COST = 64  # per element of a binary BYTES tensor: a bytes object and two pointers
WAIT_S = 5.0  # how long a body waits for others to finish decoding before a 503
OFF_LOOP_BYTES = 1 << 20  # larger bodies decode on a thread: the event loop goes on serving meanwhile
TRIM_AFTER_BYTES = 64 << 20  # after reservations this large, give freed heap back to the OS


def decoding_cost(body_bytes: int, json_bytes: int | None = None) -> int:
    """The reservation for decoding a body of ``body_bytes`` whose first ``json_bytes`` are JSON
    (all of it when None; the rest is Triton's binary tensor data)."""
    json_part = body_bytes if json_bytes is None else min(max(json_bytes, 0), body_bytes)
    return json_part * JSON_EXPANSION + (body_bytes - json_part) * BINARY_EXPANSION


class DecodingBudget:
    """Bytes reserved by bodies being read and decoded, across all requests; at most ``limit``."""

    def __init__(self, limit: int, *, wait_s: float = WAIT_S) -> None:
        self.limit = limit
        self.wait_s = wait_s
        self.in_use = 0
        self.peak = 0
        self._freed = asyncio.Condition()
        self._waiting = 0
        self._released_since_trim = 0

    async def acquire(self, n: int, what: str, *, total: int | None = None) -> None:
        """Reserve ``n`` more bytes for ``what``, which then holds ``total`` (default ``n``) in all."""
        whole = n if total is None else total
        if whole > self.limit:
            raise PayloadTooLarge(
                f"{what} needs about {whole} bytes to decode, which exceeds the limit of {self.limit} "
                "bytes being decoded at once (--max-decoding-bytes); send a smaller request, or binary "
                "tensor data instead of JSON"
            )
        if self.in_use + n <= self.limit:  # the common case: no lock, no wait
            self._take(n)
            return
        async with self._freed:
            self._waiting += 1
            try:
                fits = self._freed.wait_for(lambda: self.in_use + n <= self.limit)
                await asyncio.wait_for(fits, self.wait_s)
            except TimeoutError:
                raise Unavailable(
                    f"the server is decoding {self.in_use} bytes of other requests; {what} needs {n} "
                    f"more than its limit of {self.limit} allows; retry",
                    retry_after_s=1.0,
                ) from None
            finally:
                self._waiting -= 1
            self._take(n)

    def _take(self, n: int) -> None:
        self.in_use += n
        self.peak = max(self.peak, self.in_use)

    async def release(self, n: int) -> None:
        if n <= 0:
            return
        self.in_use -= n
        if self._waiting:  # the common case has nobody waiting: no lock taken per request
            async with self._freed:
                self._freed.notify_all()
        self._released_since_trim += n
        if self._released_since_trim >= TRIM_AFTER_BYTES and self.in_use == 0:
            self._released_since_trim = 0
            await asyncio.to_thread(_trim_heap)


class HeldBody:
    """A body read under a reservation of the budget; ``account`` grows both as a body inflates."""

    def __init__(self, budget: DecodingBudget, max_body_bytes: int, what: str) -> None:
        self.budget = budget
        self.max_body_bytes = max_body_bytes
        self.what = what
        self.body = b""
        self.reserved = 0
        self._json_bytes: int | None = None
        self._elements_cost = 0  # BYTES elements in binary tensor data (see account_bytes_elements)

    async def account_bytes_elements(self) -> None:
        """Binary BYTES tensors cost per element, not per byte: 2-byte strings take about 50 bytes
        of Python objects each (7x their wire size, not 2x). Reserve ``BYTES_ELEMENT_COST`` per
        element that the JSON header declares, before the tensors are built."""
        if not self._json_bytes or b'"BYTES"' not in self.body[: self._json_bytes]:
            return  # numeric tensors (the common case) cost no parse here
        try:
            header = orjson.loads(self.body[: self._json_bytes])
            elements = sum(
                math.prod(raw["shape"])
                for raw in header["inputs"]
                if raw.get("datatype") == "BYTES" and "binary_data_size" in (raw.get("parameters") or {})
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
            return  # malformed: the codec says why
        if not isinstance(elements, int) or elements <= 0:
            return
        self._elements_cost = min(elements, 1 << 62) * BYTES_ELEMENT_COST
        await self.account(len(self.body))

    async def account(self, body_bytes: int) -> None:
        """Check ``body_bytes`` (the size the body is, or will be once decompressed) against the
        body limit, and reserve what decoding that much takes. Call it before materialising them."""
        if body_bytes > self.max_body_bytes:
            raise PayloadTooLarge(
                f"{self.what} body of {body_bytes} bytes exceeds the limit of {self.max_body_bytes} bytes"
            )
        cost = decoding_cost(body_bytes, self._json_bytes) + self._elements_cost
        if cost > self.reserved:
            what = f"a {self.what} body of {body_bytes} bytes"
            await self.budget.acquire(cost - self.reserved, what, total=cost)
            self.reserved = cost


class BodyReader:
    """The server's body limits. ``read`` for small control bodies; ``decode`` for bodies that
    become tensors (inference, jobs): read and decoded under the shared budget."""

    def __init__(self, max_body_bytes: int, max_decoding_bytes: int) -> None:
        self.max_body_bytes = max_body_bytes
        self.budget = DecodingBudget(max_decoding_bytes)

    @contextlib.asynccontextmanager
    async def held(
        self, request: Request, what: str = "request", *, limit: int | None = None
    ) -> AsyncIterator[HeldBody]:
        """The body of ``request`` (at most ``limit`` bytes, default ``max_body_bytes``), with its
        decoding reserved until the block ends."""
        held = HeldBody(self.budget, min(limit or self.max_body_bytes, self.max_body_bytes), what)
        held._json_bytes = json_part_length(request.headers.get(HEADER_LENGTH))
        try:
            declared = _content_length(request)
            if declared is not None:
                await held.account(declared)
                held.body = await _read(request, declared)
            else:  # chunked: the reservation grows with what arrives
                held.body = await _read_chunks(request, held.account)
            encoding = request.headers.get("content-encoding")
            if encoding:
                held.body = await _inflated(held, encoding)
            yield held
        finally:
            held.body = b""
            await self.budget.release(held.reserved)

    async def decode(
        self,
        request: Request,
        decode: Callable[[bytes], T],
        what: str = "request",
        *,
        check: Callable[[bytes], None] | None = None,
    ) -> T:
        """``decode(body)`` under the budget; large bodies on a thread. ``check(body)``, if given,
        runs first, on the event loop (e.g. refusing what cannot be admitted before decoding it)."""
        async with self.held(request, what) as held:
            if check is not None:
                check(held.body)
            await held.account_bytes_elements()
            if len(held.body) > OFF_LOOP_BYTES:
                return await asyncio.to_thread(decode, held.body)
            return decode(held.body)


# Triton's cap on the non-empty pieces of a body without Content-Length (chunked): each piece costs
# a list entry, so a body of one-byte chunks cannot cost far more memory than its bytes.
MAX_CHUNKS = 1 << 16


async def _inflated(held: HeldBody, encoding: str) -> bytes:
    """The body decoded from its Content-Encoding, each piece reserved before the next is inflated."""
    pieces: list[bytes] = []
    total = 0
    for number, piece in enumerate(iter_decoded(held.body, encoding, held.max_body_bytes), 1):
        total += len(piece)
        await held.account(total)
        pieces.append(piece)
        if number % 16 == 0:
            await asyncio.sleep(0)  # a 64 MiB body inflates in 1,024 steps: let requests in between
    return b"".join(pieces)


async def read_body(request: Request, limit: int) -> bytes:
    """A small body (admin and repository routes) under ``limit`` bytes, without the budget."""
    declared = _content_length(request)
    if declared is not None:
        if declared > limit:
            raise PayloadTooLarge(f"request body of {declared} bytes exceeds the limit of {limit} bytes")
        return await _read(request, declared)

    async def within_limit(total: int) -> None:
        if total > limit:
            raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")

    return await _read_chunks(request, within_limit)


async def _read_chunks(request: Request, admit: Callable[[int], Awaitable[None]]) -> bytes:
    """A body without Content-Length: ``admit(bytes so far)`` before each piece is kept, and at
    most ``MAX_CHUNKS`` non-empty pieces."""
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        await admit(total)
        if chunk:
            chunks.append(chunk)
            if len(chunks) > MAX_CHUNKS:
                raise InvalidInput(
                    f"Chunked request body exceeds maximum of {MAX_CHUNKS} non-empty chunks. "
                    "Send fewer or larger HTTP chunks."
                )
    return b"".join(chunks)


async def _read(request: Request, declared: int) -> bytes:
    body = await request.body()
    if len(body) > declared:  # the HTTP parser holds to Content-Length; this is a second guard
        raise InvalidInput(f"request body is longer than its Content-Length {declared}")
    return body


def _content_length(request: Request) -> int | None:
    declared = request.headers.get("content-length")
    if declared is None:
        return None
    if not declared.isascii() or not declared.isdigit():
        raise InvalidInput(f"invalid Content-Length '{declared[:40]}'")
    return int(declared)


def json_part_length(raw: str | None) -> int | None:
    """The JSON part of a binary-extension body; None (all JSON) when absent or invalid (the codec
    reports an invalid one; counting it all as JSON is the safe side)."""
    if raw is None or not raw.isascii() or not raw.isdigit() or len(raw) > 19:
        return None
    return int(raw)


def _trim_heap() -> None:
    """Give the C heap's free pages back to the OS: after a large decode, glibc keeps them (measured
    here: RSS stayed 0.4-1.5 GB above its start after one 62 MB JSON body)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass
