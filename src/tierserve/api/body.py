"""Reading request bodies under a size limit."""

from __future__ import annotations

from starlette.requests import Request

from tierserve.errors import InvalidInput, PayloadTooLarge

# Triton's cap on the non-empty pieces of a body without Content-Length (chunked): each piece costs
# a list entry, so a body of one-byte chunks cannot cost far more memory than its bytes.
MAX_CHUNKS = 1 << 16


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise InvalidInput(f"invalid Content-Length '{declared}'")
        if int(declared) > limit:
            raise PayloadTooLarge(f"request body of {declared} bytes exceeds the limit of {limit} bytes")
        return await request.body()
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
        if chunk:
            chunks.append(chunk)
            if len(chunks) > MAX_CHUNKS:
                raise InvalidInput(
                    f"Chunked request body exceeds maximum of {MAX_CHUNKS} non-empty chunks. "
                    "Send fewer or larger HTTP chunks."
                )
    return b"".join(chunks)
