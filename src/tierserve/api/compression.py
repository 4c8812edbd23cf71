"""Compressed bodies: ``Content-Encoding`` on requests and ``Accept-Encoding`` for responses.

tritonclient's ``request_compression_algorithm="gzip"`` / ``"deflate"`` compresses the whole body
(JSON header and binary tensors; ``Inference-Header-Content-Length`` counts the header before
compression) and ``response_compression_algorithm`` sends ``Accept-Encoding``. Rules:

1. A request body is decoded codings last-applied first (``Content-Encoding: gzip`` or ``deflate``;
   ``deflate`` in the zlib wrapper as HTTP means it, or raw as some clients send it; ``identity``
   is nothing). Any other coding answers 415.
2. Decoded bytes count against the same limit as the body itself (``--max-body-bytes``): inflation
   runs ``DECODE_STEP`` bytes at a time and stops with 413 as soon as the output passes the limit,
   so a small "zip bomb" never grows past the limit in memory. ``iter_decoded`` yields the pieces so
   that the reader (``tierserve.api.body``) reserves each against the decoding budget first.
3. A response of at least ``MIN_COMPRESS_BYTES`` is compressed with the coding the client prefers
   (``q`` values honoured; gzip on ties); smaller ones are not worth it and go as they are.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator

from tierserve.errors import InvalidInput, PayloadTooLarge, TierserveError

DECODE_STEP = 1 << 16  # bytes inflated (and compressed bytes fed) per step
MIN_COMPRESS_BYTES = 1024
_GZIP_WBITS = 31
_ZLIB_WBITS = 15
_RAW_DEFLATE_WBITS = -15


class UnsupportedEncoding(TierserveError):
    status_code = 415


def iter_decoded(body: bytes, encoding: str, limit: int) -> Iterator[bytes]:
    """The decoded body in pieces of at most ``DECODE_STEP`` bytes, so that a caller can account
    for each piece (e.g. against a shared decoding budget) before the next one is inflated."""
    codings = [coding.strip().lower() for coding in encoding.split(",") if coding.strip()]
    for coding in codings:
        if coding not in ("gzip", "x-gzip", "deflate", "identity"):
            raise UnsupportedEncoding(
                f"unsupported Content-Encoding '{coding}'; this server decodes gzip and deflate"
            )
    layers = [coding for coding in codings if coding != "identity"]
    if not layers:
        yield body
        return
    for coding in reversed(layers[1:]):  # inner layers of a body encoded more than once, whole
        body = b"".join(_inflate(body, coding, limit))
    yield from _inflate(body, layers[0], limit)


def _has_zlib_header(data: bytes) -> bool:
    """RFC 1950: deflate method, and the two header bytes form a multiple of 31."""
    return len(data) >= 2 and data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0


def _inflate(data: bytes, coding: str, limit: int) -> Iterator[bytes]:
    if coding == "deflate":
        wbits = _ZLIB_WBITS if _has_zlib_header(data) else _RAW_DEFLATE_WBITS
    else:
        wbits = _GZIP_WBITS
    total = 0
    remaining = memoryview(data)
    inflater = zlib.decompressobj(wbits)
    try:
        while True:
            if inflater.eof:
                rest = inflater.unused_data + bytes(remaining)
                if wbits == _GZIP_WBITS and rest.strip(b"\0"):  # concatenated gzip members
                    inflater, remaining = zlib.decompressobj(wbits), memoryview(rest)
                    continue
                if rest.strip(b"\0"):
                    raise InvalidInput(f"{len(rest)} bytes follow the end of the compressed body")
                return
            if inflater.unconsumed_tail:
                feed = inflater.unconsumed_tail
            elif remaining:
                feed, remaining = bytes(remaining[:DECODE_STEP]), remaining[DECODE_STEP:]
            else:
                feed = b""  # zlib may still hold output for the input already given
            piece = inflater.decompress(feed, DECODE_STEP)
            if not piece and not feed and not inflater.eof:
                raise InvalidInput("the compressed request body is truncated")
            total += len(piece)
            if total > limit:
                raise PayloadTooLarge(f"the decompressed request body exceeds the limit of {limit} bytes")
            if piece:
                yield piece
    except zlib.error as exc:
        raise InvalidInput(f"the request body is not valid compressed data: {exc}") from None


def choose_encoding(accept_encoding: str | None) -> str | None:
    """The coding to answer with: gzip or deflate, whichever the client weighs higher (None: neither)."""
    if not accept_encoding:
        return None
    weights: dict[str, float] = {}
    for item in accept_encoding.split(","):
        coding, _, params = item.strip().partition(";")
        weight = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    weight = float(value)
                except ValueError:
                    weight = 0.0
        weights[coding.strip().lower()] = weight
    star = weights.get("*", 0.0)
    gzip_q = weights.get("gzip", weights.get("x-gzip", star))
    deflate_q = weights.get("deflate", star)
    if max(gzip_q, deflate_q) <= 0:
        return None
    return "gzip" if gzip_q >= deflate_q else "deflate"


def compress_response(
    content: bytes, headers: dict[str, str], accept_encoding: str | None
) -> tuple[bytes, dict[str, str]]:
    """``content`` compressed as the client accepts (headers updated), or as it was."""
    if len(content) < MIN_COMPRESS_BYTES:
        return content, headers
    coding = choose_encoding(accept_encoding)
    if coding is None:
        return content, headers
    # Level 1: most of the size saving at a fraction of the default level's time on tensor data.
    if coding == "gzip":
        packed = gzip.compress(content, compresslevel=1, mtime=0)
    else:
        packed = zlib.compress(content, 1)
    return packed, {**headers, "content-encoding": coding, "vary": "Accept-Encoding"}
