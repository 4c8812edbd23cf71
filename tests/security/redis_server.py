"""A real Redis for the tests, started once per test process by ``scripts/redis.sh`` and stopped at
exit. Tests skip (with the reason) only when redis-server or the redis client is missing;
``.ci/run`` installs both, so CI runs them."""

from __future__ import annotations

from dataclasses import dataclass

from support.scripted import ScriptedServer

_SCRIPT = ScriptedServer("redis.sh", probe="bin", client="redis", start_timeout_s=60)


@dataclass(frozen=True)
class RedisServer:
    url: str
    directory: str


def skip_reason() -> str | None:
    return _SCRIPT.skip_reason()


def server() -> RedisServer:
    """The shared server, started on first use; skips the test when Redis is not installed."""
    values = _SCRIPT.values()
    return RedisServer(values["URL"], values["DIR"])
