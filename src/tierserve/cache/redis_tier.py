"""The shared layer: answers in Redis for every server that points at it, and the generation of each
model version (so that a load on one server makes the old answers unreachable on all of them).

Redis being down or slow is never the client's problem: every call has a short timeout, a failure
marks the layer down for ``retry_s`` (requests bypass it meanwhile, counted by the caller), and it
is logged once per outage. Writes are neither waited for nor answered (a write-only connection
with CLIENT REPLY OFF); a Redis that takes none is found out by the next read.

Keys (answers expire by their model's ``ttl_s``; the rest of Redis's memory policy is its own)::

    tierserve:cache:<model>:<version>:<key hex>   an answer (``answer.Answer.encode``)
    tierserve:cache:gen:<model>:<version>         the generation, INCR-ed on load and unload
    channel tierserve:cache:generations            "<generation> <version> <model>" on every INCR
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from tierserve.cache.resp import RedisReplyError, RespClient

log = logging.getLogger(__name__)

PREFIX = "tierserve:cache:"
CHANNEL = "tierserve:cache:generations"

GenerationListener = Callable[[str, int, int], None]  # model, version, generation


class TierDown(Exception):
    """The Redis layer cannot answer now (down, timed out, or recently failed)."""


def answer_key(model: str, version: int, key: bytes) -> str:
    return f"{PREFIX}{model}:{version}:{key.hex()}"


def generation_key(model: str, version: int) -> str:
    return f"{PREFIX}gen:{model}:{version}"


class RedisTier:
    def __init__(
        self,
        url: str,
        on_generation: GenerationListener,
        *,
        timeout_s: float = 0.5,
        retry_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        import redis

        self.url = url
        self._on_generation = on_generation
        self._retry_s = retry_s
        self._clock = clock
        options: dict[str, Any] = {"socket_timeout": timeout_s, "socket_connect_timeout": timeout_s}
        self._client = RespClient.from_url(url, timeout_s=timeout_s)  # the hot path: reads and writes
        self._sync: Any = redis.Redis.from_url(url, **options)  # generations, from the loading thread
        self._errors = (redis.RedisError, OSError, asyncio.TimeoutError, RedisReplyError)
        self._down_until = 0.0
        self._down_logged = False
        self._subscriber: asyncio.Task[None] | None = None
        self.synced = asyncio.Event()  # set once subscribed (generations are then pushed to us)
        self.known: Callable[[], Iterable[tuple[str, int]]] = lambda: ()  # versions to resync

    # -- answers (event loop) --------------------------------------------------------------------

    @property
    def available(self) -> bool:
        return self._clock() >= self._down_until

    async def get(self, keys: list[str]) -> tuple[int, bytes] | None:
        """The first of ``keys`` that Redis holds (its index and value), or None; TierDown when
        Redis cannot say."""
        if not self.available:
            raise TierDown
        try:
            values = await self._client.command(b"MGET", *(k.encode() for k in keys))
        except self._errors as exc:
            self._failed(exc)
            raise TierDown from exc
        self._recovered()
        return next(((i, v) for i, v in enumerate(values) if v is not None), None)

    def put(self, key: str, value: bytes, ttl_s: float) -> bool:
        """Write without waiting or reading a reply; False when skipped (layer down, or no write
        connection yet)."""
        if not self.available:
            return False
        ttl_ms = b"%d" % max(1, int(ttl_s * 1000))
        return self._client.write((b"SET", key.encode(), value, b"PX", ttl_ms))

    # -- generations (loading thread) ------------------------------------------------------------

    def bump(self, model: str, version: int) -> int:
        """A new generation for ``model`` ``version`` on every server; TierDown when Redis is down."""
        try:
            generation = int(self._sync.incr(generation_key(model, version)))
            self._sync.publish(CHANNEL, f"{generation} {version} {model}")
        except self._errors as exc:
            self._failed(exc)
            raise TierDown from exc
        return generation

    def read(self, model: str, version: int) -> int:
        try:
            raw = self._sync.get(generation_key(model, version))
        except self._errors as exc:
            self._failed(exc)
            raise TierDown from exc
        return int(raw or 0)

    # -- lifecycle -------------------------------------------------------------------------------

    async def open(self) -> None:
        self._subscriber = asyncio.create_task(self._subscribe())
        self._client.open_writer()

    async def close(self) -> None:
        if self._subscriber is not None:
            self._subscriber.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._subscriber
        await self._client.close()
        self._sync.close()

    async def _subscribe(self) -> None:
        """Follow generation changes; after every (re)subscription, re-read the generations of the
        versions we serve, since messages sent while we were away are lost."""
        import redis.asyncio

        while True:
            # No socket timeout here: an idle subscription waits as long as it must.
            client: Any = redis.asyncio.Redis.from_url(self.url, health_check_interval=10)
            try:
                async with client.pubsub() as pubsub:
                    await pubsub.subscribe(CHANNEL)
                    await self._resync()
                    self.synced.set()
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            self._deliver(message["data"])
            except asyncio.CancelledError:
                raise
            except self._errors as exc:
                self.synced.clear()
                self._failed(exc)
                await asyncio.sleep(self._retry_s)
            finally:
                await client.aclose()

    async def _resync(self) -> None:
        versions = list(self.known())
        if not versions:
            return
        values = await self._client.command(b"MGET", *(generation_key(m, v).encode() for m, v in versions))
        for (model, version), raw in zip(versions, values, strict=True):
            self._on_generation(model, version, int(raw or 0))

    def _deliver(self, data: bytes) -> None:
        try:
            generation, version, model = data.decode().split(" ", 2)
            self._on_generation(model, int(version), int(generation))
        except ValueError:
            log.warning("ignoring a malformed cache generation message: %r", data[:100])

    def _failed(self, exc: BaseException) -> None:
        self._down_until = self._clock() + self._retry_s
        if not self._down_logged:
            self._down_logged = True
            log.warning(
                "result cache: Redis at %s is unreachable (%s); serving without the shared layer until "
                "it answers again", _redacted(self.url), exc or type(exc).__name__,
            )  # fmt: skip

    def _recovered(self) -> None:
        if self._down_logged:
            self._down_logged = False
            log.warning("result cache: Redis at %s answers again", _redacted(self.url))


def _redacted(url: str) -> str:
    """The URL without a password."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.split("@", 1)[1]
    return scheme + sep + rest
