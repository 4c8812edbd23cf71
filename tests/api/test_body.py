"""Body reading limits that need no server: Triton's cap on the pieces of a chunked body."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from starlette.requests import Request

from tierserve.api.body import MAX_CHUNKS, read_body
from tierserve.errors import InvalidInput


def _chunked_request(pieces: int) -> Request:
    """A request without Content-Length whose body arrives in ``pieces`` one-byte ASGI messages."""
    sent = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        sent += 1
        return {"type": "http.request", "body": b"x", "more_body": sent < pieces}

    scope = {"type": "http", "method": "POST", "headers": [(b"transfer-encoding", b"chunked")]}
    return Request(scope, receive)


def test_a_body_of_65536_pieces_is_read() -> None:
    assert len(asyncio.run(read_body(_chunked_request(MAX_CHUNKS), 1 << 20))) == MAX_CHUNKS


def test_one_piece_more_is_refused_as_triton_does() -> None:
    with pytest.raises(InvalidInput, match="exceeds maximum of 65536 non-empty chunks"):
        asyncio.run(read_body(_chunked_request(MAX_CHUNKS + 1), 1 << 20))
