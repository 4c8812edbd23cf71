"""Request bodies decoded from gzip/deflate under the body limit; responses compressed as accepted."""

from __future__ import annotations

import gzip
import zlib

import pytest

from tierserve.api.compression import (
    DECODE_STEP,
    MIN_COMPRESS_BYTES,
    UnsupportedEncoding,
    choose_encoding,
    compress_response,
    iter_decoded,
)
from tierserve.errors import InvalidInput, PayloadTooLarge

BODY = b'{"inputs": []}' * 1000


def decode_body(body: bytes, encoding: str, limit: int) -> bytes:
    pieces = list(iter_decoded(body, encoding, limit))
    assert all(len(piece) <= DECODE_STEP for piece in pieces)
    return b"".join(pieces)


@pytest.mark.parametrize(
    "encoding, packed",
    [
        ("gzip", gzip.compress(BODY)),
        ("x-gzip", gzip.compress(BODY)),
        ("deflate", zlib.compress(BODY)),  # what tritonclient sends: the zlib wrapper
        ("deflate", zlib.compress(BODY)[2:-4]),  # raw deflate, as some clients send it
        ("identity", BODY),
        ("gzip, identity", gzip.compress(BODY)),
        ("deflate, gzip", gzip.compress(zlib.compress(BODY))),  # applied in order, decoded in reverse
        ("GZIP", gzip.compress(BODY[:10]) + gzip.compress(BODY[10:])),  # concatenated members
    ],
)
def test_encoded_bodies_decode(encoding: str, packed: bytes) -> None:
    assert decode_body(packed, encoding, limit=len(BODY)) == BODY


def test_a_zip_bomb_stops_at_the_limit() -> None:
    bomb = gzip.compress(b"\0" * (64 << 20))  # 64 MiB of zeros in about 64 KiB
    assert len(bomb) < 100_000
    with pytest.raises(PayloadTooLarge, match="decompressed request body exceeds the limit of 1048576"):
        decode_body(bomb, "gzip", limit=1 << 20)


def test_the_limit_counts_decoded_bytes_exactly() -> None:
    data = bytes(range(256)) * (3 * DECODE_STEP // 256 + 7)
    assert decode_body(zlib.compress(data), "deflate", limit=len(data)) == data
    with pytest.raises(PayloadTooLarge):
        decode_body(zlib.compress(data), "deflate", limit=len(data) - 1)


@pytest.mark.parametrize(
    "encoding, packed, error, message",
    [
        ("br", b"...", UnsupportedEncoding, "unsupported Content-Encoding 'br'"),
        ("gzip", b"not gzip at all", InvalidInput, "not valid compressed data"),
        ("gzip", gzip.compress(BODY)[:-20], InvalidInput, "truncated"),
        ("deflate", zlib.compress(BODY) + b"junk", InvalidInput, "follow the end"),
    ],
)
def test_bad_encodings_are_4xx(encoding: str, packed: bytes, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        decode_body(packed, encoding, limit=1 << 20)
    assert UnsupportedEncoding("x").status_code == 415


@pytest.mark.parametrize(
    "accept, chosen",
    [
        (None, None),
        ("", None),
        ("gzip", "gzip"),
        ("deflate", "deflate"),
        ("gzip, deflate, br", "gzip"),
        ("gzip;q=0.5, deflate", "deflate"),
        ("gzip;q=0", None),
        ("identity", None),
        ("*", "gzip"),
        ("br", None),
        ("gzip;q=nonsense, deflate;q=0.1", "deflate"),
    ],
)
def test_choose_encoding_honours_weights(accept: str | None, chosen: str | None) -> None:
    assert choose_encoding(accept) == chosen


def test_responses_are_compressed_when_accepted_and_worth_it() -> None:
    headers = {"content-type": "application/json"}
    content, out = compress_response(BODY, headers, "gzip")
    assert out["content-encoding"] == "gzip" and gzip.decompress(content) == BODY
    content, out = compress_response(BODY, headers, "deflate")
    assert out["content-encoding"] == "deflate" and zlib.decompress(content) == BODY
    small = b"x" * (MIN_COMPRESS_BYTES - 1)
    assert compress_response(small, headers, "gzip") == (small, headers)
    assert compress_response(BODY, headers, None) == (BODY, headers)
