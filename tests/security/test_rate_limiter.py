"""The limiter on both storages: in process, and a real Redis shared by several limiters."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable

import pytest

from security import redis_server
from tierserve.errors import InvalidInput, Unavailable
from tierserve.security.rate_limiter import Limiter, MemoryLimiter, RedisLimiter, open_limiter
from tierserve.security.rates import Window

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["memory", "redis"])
async def make_limiter(request: pytest.FixtureRequest) -> AsyncIterator[Callable[[], Limiter]]:
    """Makes limiters that share one storage (as the servers of one deployment would)."""
    made: list[Limiter] = []
    if request.param == "memory":
        shared = MemoryLimiter()
        made.append(shared)

        def factory() -> Limiter:
            return shared
    else:
        url = redis_server.server().url

        def factory() -> Limiter:
            limiter = RedisLimiter(url)
            made.append(limiter)
            return limiter

    yield factory
    for limiter in made:
        await limiter.close()


async def test_a_window_admits_its_amount_then_tells_when_to_retry(
    make_limiter: Callable[[], Limiter],
) -> None:
    limiter = make_limiter()
    key = f"key:{uuid.uuid4().hex}"
    window = Window(3, 10)
    assert [await limiter.hit(window, key) for _ in range(3)] == [None, None, None]
    retry_after = await limiter.hit(window, key)
    assert retry_after is not None and 9.0 <= retry_after <= 10.0
    assert await limiter.hit(window, f"key:{uuid.uuid4().hex}") is None  # another key, another window


async def test_limiters_on_one_storage_share_windows_and_slots(make_limiter: Callable[[], Limiter]) -> None:
    first, second = make_limiter(), make_limiter()
    key = f"key:{uuid.uuid4().hex}"
    window = Window(4, 60)
    admitted = [await limiter.hit(window, key) is None for limiter in (first, second) * 3]
    assert admitted == [True, True, True, True, False, False]
    token = await first.acquire(key, 1)
    assert token is not None
    assert await second.acquire(key, 1) is None
    await first.release(key, token)
    again = await second.acquire(key, 1)
    assert again is not None
    await second.release(key, again)


async def test_an_unreachable_redis_fails_the_check_and_then_refuses_with_503() -> None:
    limiter = RedisLimiter("redis://127.0.0.1:1/0")
    try:
        with pytest.raises(InvalidInput, match="cannot reach Redis"):
            await limiter.check()
        with pytest.raises(Unavailable, match="rate limits cannot be checked") as caught:
            await limiter.hit(Window(1, 1), "key:x")
        assert caught.value.status_code == 503
        with pytest.raises(Unavailable):
            await limiter.acquire("key:x", 1)
        await limiter.release("key:x", "token")  # logged, not raised: the slot expires by itself
    finally:
        await limiter.close()


def test_only_redis_urls_are_accepted() -> None:
    with pytest.raises(InvalidInput, match="redis://"):
        open_limiter("memcached://localhost")
    assert isinstance(open_limiter(""), MemoryLimiter)
