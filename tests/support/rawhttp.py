"""A minimal keep-alive HTTP/1.1 client over asyncio streams, for open-loop load in tests.

httpx costs a millisecond or more of CPU per request; in an open-loop test on a two-core machine
that lag lands on the client's own clock and reads as server latency. This client costs tens of
microseconds: it sends pre-encoded requests and reads Content-Length responses only.
"""

from __future__ import annotations

import asyncio


class RawConnection:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        """Send ``raw``; a kept-alive connection the server has since closed (uvicorn drops idle ones
        after 5 s) is reopened once."""
        reused = self._reader is not None
        try:
            return await self._exchange(raw)
        except (asyncio.IncompleteReadError, ConnectionError):
            await self.close()
            if not reused:
                raise
            return await self._exchange(raw)

    async def _exchange(self, raw: bytes) -> tuple[int, bytes]:
        if self._reader is None or self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        self._writer.write(raw)
        await self._writer.drain()
        head = (await self._reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        status = int(head.split(" ", 2)[1])
        length = next(
            int(line.split(":", 1)[1])
            for line in head.split("\r\n")
            if line.lower().startswith("content-length:")
        )
        return status, await self._reader.readexactly(length)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None


def post(path: str, body: bytes, host: str = "127.0.0.1") -> bytes:
    """A complete POST request with a JSON body."""
    head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
    head += f"Content-Length: {len(body)}\r\n\r\n"
    return head.encode() + body
