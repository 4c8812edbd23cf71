"""The cache's pipelined Redis client: RESP2 parsing, and a real Redis (scripts/redis.sh)."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from security import redis_server
from tierserve.cache.resp import Incomplete, RedisReplyError, RespClient, encode, parse


def whole(raw: bytes) -> object:
    value, end = parse(raw, 0)
    assert end == len(raw)
    return value


def test_encode() -> None:
    assert encode((b"GET", b"k")) == b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"
    assert encode((b"SET", b"", b"a\r\nb")) == b"*3\r\n$3\r\nSET\r\n$0\r\n\r\n$4\r\na\r\nb\r\n"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"+OK\r\n", b"OK"),
        (b":42\r\n", 42),
        (b"$-1\r\n", None),
        (b"$4\r\na\r\nb\r\n", b"a\r\nb"),
        (b"*2\r\n$1\r\nx\r\n$-1\r\n", [b"x", None]),
        (b"*-1\r\n", None),
    ],
)
def test_replies(raw: bytes, expected: object) -> None:
    assert whole(raw) == expected
    for cut in range(len(raw)):  # every prefix is incomplete, not a wrong reply
        with pytest.raises(Incomplete):
            parse(raw[:cut], 0)


def test_replies_follow_each_other_in_one_buffer() -> None:
    buffer = b"+OK\r\n$2\r\nab\r\n:7\r\n"
    first, at = parse(buffer, 0)
    second, at = parse(buffer, at)
    third, at = parse(buffer, at)
    assert (first, second, third, at) == (b"OK", b"ab", 7, len(buffer))


def test_error_replies_are_returned_as_errors() -> None:
    reply = whole(b"-WRONGTYPE Operation against a key\r\n")
    assert isinstance(reply, RedisReplyError) and "WRONGTYPE" in str(reply)


def loop_factories() -> list[object]:
    """asyncio's own loop, and uvloop's (the server's: its transports are not asyncio.Transport)."""
    try:
        import uvloop
    except ImportError:
        return [None]
    return [None, uvloop.new_event_loop]


@pytest.mark.parametrize("loop_factory", loop_factories(), ids=lambda f: "asyncio" if f is None else "uvloop")
def test_commands_pipeline_on_one_connection_against_a_real_redis(loop_factory: Any) -> None:
    url = redis_server.server().url

    async def go() -> None:
        client = RespClient.from_url(url, timeout_s=5.0)
        try:
            assert (
                await client.command(b"SET", b"tierserve:test:resp", b"v\x00\xff", b"PX", b"60000") == b"OK"
            )
            replies = await asyncio.gather(
                *(client.command(b"MGET", b"tierserve:test:resp", b"tierserve:test:none") for _ in range(50))
            )
            assert replies == [[b"v\x00\xff", None]] * 50
            with pytest.raises(RedisReplyError):
                await client.command(b"NOSUCHCOMMAND")
            assert await client.command(b"GET", b"tierserve:test:resp") == b"v\x00\xff"  # still in step
        finally:
            await client.close()

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(go())


def test_an_unanswering_server_times_out_and_the_next_call_reconnects() -> None:
    with socket.socket() as silent:  # accepts connections (backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]

        async def go() -> None:
            client = RespClient("127.0.0.1", port, timeout_s=0.2)
            try:
                for _ in range(2):
                    with pytest.raises(TimeoutError):
                        await client.command(b"GET", b"k")
            finally:
                await client.close()

        asyncio.run(go())


def test_writes_go_unanswered_on_their_own_connection_and_land() -> None:
    url = redis_server.server().url

    async def go() -> None:
        client = RespClient.from_url(url, timeout_s=5.0)
        try:
            client.open_writer()
            for _ in range(200):  # the write connection opens in the background
                if client.write((b"SET", b"tierserve:test:write", b"w", b"PX", b"60000")):
                    break
                await asyncio.sleep(0.01)
            else:
                raise AssertionError("the write connection never opened")
            for _ in range(200):  # a write is not waited for: poll until Redis shows it
                if await client.command(b"GET", b"tierserve:test:write") == b"w":
                    return
                await asyncio.sleep(0.01)
            raise AssertionError("the write never landed")
        finally:
            await client.close()

    asyncio.run(go())
