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


# -- the decoding budget -----------------------------------------------------------------------------


def test_decoding_cost_counts_json_at_its_expansion_and_binary_data_at_two() -> None:
    from tierserve.api.body import BINARY_EXPANSION, JSON_EXPANSION, decoding_cost

    assert decoding_cost(1000) == 1000 * JSON_EXPANSION
    assert decoding_cost(1000, 100) == 100 * JSON_EXPANSION + 900 * BINARY_EXPANSION
    assert decoding_cost(1000, 0) == 1000 * BINARY_EXPANSION  # Triton's raw binary request
    assert decoding_cost(1000, 5000) == 1000 * JSON_EXPANSION  # a length past the body: all JSON


def test_a_reservation_over_the_whole_budget_is_413_at_once() -> None:
    from tierserve.api.body import DecodingBudget
    from tierserve.errors import PayloadTooLarge

    async def run() -> None:
        budget = DecodingBudget(100, wait_s=60)
        with pytest.raises(PayloadTooLarge, match="--max-decoding-bytes"):
            await budget.acquire(101, "a body")
        await budget.acquire(60, "a body")
        with pytest.raises(PayloadTooLarge):  # growing past the budget by itself: no waiting on itself
            await budget.acquire(50, "a body", total=110)
        assert budget.in_use == 60

    asyncio.run(run())


def test_a_reservation_waits_for_others_and_then_gets_its_turn() -> None:
    from tierserve.api.body import DecodingBudget

    async def run() -> None:
        budget = DecodingBudget(100, wait_s=60)
        await budget.acquire(80, "first")
        second = asyncio.create_task(budget.acquire(50, "second"))
        for _ in range(10):
            await asyncio.sleep(0)
        assert not second.done()  # 80 + 50 > 100: it waits
        await budget.release(80)
        await asyncio.wait_for(second, 60)
        assert budget.in_use == 50 and budget.peak == 80

    asyncio.run(run())


def test_a_reservation_that_waits_too_long_is_503_with_retry_after() -> None:
    from tierserve.api.body import DecodingBudget
    from tierserve.errors import Unavailable

    async def run() -> None:
        budget = DecodingBudget(100, wait_s=0.01)  # no clock to fake here: the wait is the point
        await budget.acquire(80, "first")
        with pytest.raises(Unavailable) as refused:
            await budget.acquire(50, "second")
        assert refused.value.status_code == 503 and "Retry-After" in refused.value.headers()
        assert budget.in_use == 80

    asyncio.run(run())
