"""Bounds on HTTP connections: how long a request may take to arrive, and how many may be open.

uvicorn closes idle keep-alive connections, but not one that sends half a request line, half its
headers or half its body and then waits: measured, such connections stayed open for 75 s and more,
and 300 of them took every file descriptor of a server started with 256. Here:

- a request's line and headers must be complete within ``header_timeout_s`` of its first byte (or
  of the connection opening): else 408 and the connection is closed;
- while a body arrives, the client may stay silent at most ``body_timeout_s`` (time the server
  itself spends not reading, e.g. while a body waits for the decoding budget, does not count): else
  408 and close;
- at most ``max_connections`` connections are open; one more is answered 503 and closed at once, so
  descriptors remain for the stores, the models and the clients already connected.
"""

from __future__ import annotations

import asyncio
import resource
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

RESERVED_DESCRIPTORS = 64  # for the stores, model files, logs and outgoing connections
UNLIMITED_CONNECTIONS = 10_000  # when the descriptor limit itself is unlimited


def default_max_connections() -> int:
    """From the soft limit on open files: all but ``RESERVED_DESCRIPTORS`` of them."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return UNLIMITED_CONNECTIONS
    return max(16, soft - RESERVED_DESCRIPTORS)


def _raw_response(status: bytes, message: str, extra: bytes = b"") -> bytes:
    body = b'{"error":"' + message.encode() + b'"}'
    return (
        b"HTTP/1.1 "
        + status
        + b"\r\ncontent-type: application/json\r\nconnection: close\r\n"
        + extra
        + b"content-length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )


_HEADER_TIMEOUT = _raw_response(b"408 Request Timeout", "the request line and headers did not arrive in time")
_BODY_TIMEOUT = _raw_response(b"408 Request Timeout", "the request body stopped arriving")
_TOO_MANY = _raw_response(
    b"503 Service Unavailable", "too many open connections; retry", b"retry-after: 1\r\n"
)


def limited_protocol(header_timeout_s: float, body_timeout_s: float, max_connections: int) -> type[Any]:
    """uvicorn's httptools protocol with the bounds above (pass as ``uvicorn.Config(http=...)``)."""

    class LimitedHttpToolsProtocol(HttpToolsProtocol):
        # One deadline per connection, and at most one timer: a request only moves the deadline (a
        # float), and the timer, when it fires early, re-arms itself for the deadline then in force.
        # Scheduling and cancelling a timer per request phase cost more than the rest of this class.
        _deadline: float | None = None
        _read_timer: asyncio.TimerHandle | None = None
        _in_body = False

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                transport.write(_TOO_MANY)
                transport.close()
                return
            self._expect(header_timeout_s)

        def connection_lost(self, exc: Exception | None) -> None:
            if self._read_timer is not None:
                self._read_timer.cancel()
                self._read_timer = None
            super().connection_lost(exc)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._in_body = False
            if self._deadline is None:
                self._expect(header_timeout_s)

        def on_headers_complete(self) -> None:
            super().on_headers_complete()
            self._in_body = True
            self._expect(body_timeout_s)

        def on_body(self, body: bytes) -> None:
            self._expect(body_timeout_s)
            super().on_body(body)

        def on_message_complete(self) -> None:
            self._deadline = None
            self._in_body = False
            super().on_message_complete()

        def _expect(self, seconds: float) -> None:
            self._deadline = self.loop.time() + seconds
            if self._read_timer is None:
                self._read_timer = self.loop.call_at(self._deadline, self._check)

        def _check(self) -> None:
            self._read_timer = None
            deadline = self._deadline
            if deadline is None or self.transport.is_closing():
                return
            if self.loop.time() < deadline:
                self._read_timer = self.loop.call_at(deadline, self._check)
                return
            self._deadline = None
            if self._in_body:
                if self.flow.read_paused:  # the server is not reading; the client is not late
                    self._expect(body_timeout_s)
                    return
                if self.cycle is None or not self.cycle.response_started:
                    self.transport.write(_BODY_TIMEOUT)
            else:
                self.transport.write(_HEADER_TIMEOUT)
            self.transport.close()

    return LimitedHttpToolsProtocol
