"""A real Redis for the tests, started once per test process by ``scripts/redis.sh`` and stopped at
exit. Tests skip (with the reason) only when redis-server or the redis client is missing;
``.ci/run`` installs both, so CI runs them."""

from __future__ import annotations

import atexit
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "redis.sh"
START_TIMEOUT_S = 60


@dataclass(frozen=True)
class RedisServer:
    url: str
    directory: str


_server: RedisServer | None = None
_failure: str | None = None


def skip_reason() -> str | None:
    try:
        import redis  # noqa: F401
    except ImportError:
        return "the redis client is not installed (pip install -e '.[test]')"
    found = subprocess.run(["bash", str(SCRIPT), "bin"], capture_output=True, text=True, check=False)
    if found.returncode != 0:
        return "redis-server not found (run scripts/redis.sh install)"
    return None


def server() -> RedisServer:
    """The shared server, started on first use; skips the test when Redis is not installed."""
    global _server, _failure
    if _server is not None:
        return _server
    reason = skip_reason()
    if reason is not None:
        pytest.skip(reason)
    if _failure is not None:
        pytest.fail(_failure)
    started = subprocess.run(
        ["bash", str(SCRIPT), "start"], capture_output=True, text=True, timeout=START_TIMEOUT_S, check=False
    )
    if started.returncode != 0:
        _failure = f"scripts/redis.sh start failed ({started.returncode}):\n{started.stderr}"
        pytest.fail(_failure)
    values = dict(line.split("=", 1) for line in started.stdout.splitlines() if "=" in line)
    _server = RedisServer(values["URL"], values["DIR"])
    atexit.register(_stop, _server)
    return _server


def _stop(server: RedisServer) -> None:
    subprocess.run(
        ["bash", str(SCRIPT), "stop", server.directory], capture_output=True, timeout=60, check=False
    )
