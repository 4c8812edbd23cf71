"""Where rate and concurrency limits are counted: in this process, or in Redis for several servers.

Both use the ``limits`` package's moving-window strategy (the same algorithm on either storage);
concurrency is a count of requests in flight per key. Example::

    limiter = open_limiter("")                    # in process; "redis://host:6379/0" to share
    retry_after = await limiter.hit(Window(100, 2), "key:abc")   # None: admitted
    token = await limiter.acquire("key:abc", cap=8)              # None: over the cap
    ...
    await limiter.release("key:abc", token)
"""

from __future__ import annotations

import logging
import secrets
import time
from typing import Any, Protocol

from limits import RateLimitItem, RateLimitItemPerSecond

from tierserve.errors import InvalidInput, Unavailable
from tierserve.security.rates import Window

log = logging.getLogger(__name__)

KEY_PREFIX = "tierserve"
# A Redis slot left by a server that died mid-request frees itself after this long.
SLOT_TTL_S = 300.0


class Limiter(Protocol):
    async def hit(self, window: Window, key: str) -> float | None:
        """Count one request against ``window`` for ``key``: None when admitted, else the seconds
        until the window admits one again."""

    async def acquire(self, key: str, cap: int) -> object | None:
        """Take one of ``cap`` concurrency slots of ``key``: a token for ``release``, or None."""

    async def release(self, key: str, token: object) -> None: ...

    async def close(self) -> None: ...


class _Items:
    def __init__(self) -> None:
        self._items: dict[Window, RateLimitItem] = {}

    def __call__(self, window: Window) -> RateLimitItem:
        item = self._items.get(window)
        if item is None:
            item = self._items[window] = RateLimitItemPerSecond(window.amount, window.seconds)
        return item


class MemoryLimiter:
    """Limits of this process alone. Calls are synchronous underneath (a lock and a list per key):
    cheaper than any hand-off, and safe on the event loop."""

    def __init__(self) -> None:
        from limits.storage import MemoryStorage
        from limits.strategies import MovingWindowRateLimiter

        self._storage = MemoryStorage()
        self._windows = MovingWindowRateLimiter(self._storage)
        self._item = _Items()
        self._running: dict[str, int] = {}

    async def hit(self, window: Window, key: str) -> float | None:
        item = self._item(window)
        if self._windows.hit(item, key):
            return None
        reset, _ = self._windows.get_window_stats(item, key)
        return max(0.0, reset - time.time())

    async def acquire(self, key: str, cap: int) -> object | None:
        running = self._running.get(key, 0)
        if running >= cap:
            return None
        self._running[key] = running + 1
        return True

    async def release(self, key: str, token: object) -> None:
        left = self._running.get(key, 0) - 1
        if left > 0:
            self._running[key] = left
        else:
            self._running.pop(key, None)

    async def close(self) -> None:
        self._storage.timer.cancel()


# Atomically: forget slots past their expiry, then take one if fewer than the cap are held.
# Redis's own clock, so servers whose clocks differ still agree.
_ACQUIRE = """
local now = redis.call('TIME')
local t = tonumber(now[1]) + tonumber(now[2]) / 1e6
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', t)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], t + tonumber(ARGV[2]), ARGV[3])
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2])))
return 1
"""


class RedisLimiter:
    """Limits shared by every server that points at the same Redis."""

    def __init__(self, url: str) -> None:
        import redis.asyncio
        from limits.aio.storage import RedisStorage
        from limits.aio.strategies import MovingWindowRateLimiter

        self.url = url
        self._pool: Any = redis.asyncio.ConnectionPool.from_url(url)  # one pool for windows and slots
        options: dict[str, Any] = {"connection_pool": self._pool}
        self._storage = RedisStorage(
            "async+" + url, implementation="redispy", key_prefix=KEY_PREFIX, **options
        )
        self._windows = MovingWindowRateLimiter(self._storage)
        self._item = _Items()
        self._redis: Any = redis.asyncio.Redis(connection_pool=self._pool)
        self._acquire = self._redis.register_script(_ACQUIRE)
        self._errors: type[Exception] = redis.exceptions.RedisError

    async def check(self) -> None:
        """Fail the server's start, not its first request, when Redis cannot be reached."""
        try:
            await self._redis.ping()
        except Exception as exc:  # redis-py raises its own tree; any failure here means unusable
            raise InvalidInput(f"cannot reach Redis at {_redact(self.url)}: {exc}") from exc

    async def hit(self, window: Window, key: str) -> float | None:
        item = self._item(window)
        try:
            if await self._windows.hit(item, key):
                return None
            reset, _ = await self._windows.get_window_stats(item, key)
        except (self._errors, OSError) as exc:
            raise self._unavailable(exc) from exc
        return max(0.0, reset - time.time())

    async def acquire(self, key: str, cap: int) -> object | None:
        token = secrets.token_hex(8)
        try:
            taken = await self._acquire(keys=[_slots(key)], args=[cap, SLOT_TTL_S, token])
        except (self._errors, OSError) as exc:
            raise self._unavailable(exc) from exc
        return token if int(taken) else None

    async def release(self, key: str, token: object) -> None:
        try:
            await self._redis.zrem(_slots(key), str(token))
        except (self._errors, OSError):
            log.warning(
                "could not give back a concurrency slot of %s in Redis; it frees itself in %.0f s",
                key,
                SLOT_TTL_S,
            )

    def _unavailable(self, exc: BaseException) -> Unavailable:
        """Limits that cannot be counted refuse the request (503), rather than let it through unlimited."""
        log.warning("Redis at %s failed: %s", _redact(self.url), exc)
        return Unavailable(
            f"rate limits cannot be checked: Redis at {_redact(self.url)} failed", retry_after_s=1.0
        )

    async def close(self) -> None:
        await self._redis.aclose()
        await self._pool.disconnect()


def open_limiter(redis_url: str) -> MemoryLimiter | RedisLimiter:
    if not redis_url:
        return MemoryLimiter()
    if not redis_url.startswith(("redis://", "rediss://")):
        raise InvalidInput("--redis must be a redis:// or rediss:// URL")
    try:
        return RedisLimiter(redis_url)
    except ImportError as exc:
        raise InvalidInput(
            f"--redis needs the redis client: pip install 'tierserve[redis]' ({exc})"
        ) from None


def _slots(key: str) -> str:
    return f"{KEY_PREFIX}:slots:{key}"


def _redact(url: str) -> str:
    """The URL without its password, for messages."""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.rpartition('@')[2]}"
