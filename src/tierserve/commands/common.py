"""What the store-editing commands (``keys``, ``rollout``) share: how they run and who acts."""

from __future__ import annotations

import asyncio
import getpass
import sys
from collections.abc import Coroutine
from typing import Any

from tierserve.errors import TierserveError


def run_command(name: str, command: Coroutine[Any, Any, int]) -> int:
    """Run ``command``; a TierserveError (bad input, unknown id) is one line on stderr and exit 2."""
    try:
        return asyncio.run(command)
    except TierserveError as exc:
        print(f"tierserve {name}: {exc.message}", file=sys.stderr)
        return 2


def cli_actor() -> str:
    """Who the audit log says acted: ``cli:<user>``."""
    try:
        user = getpass.getuser()
    except Exception:  # no user name in this environment (getpass raises various errors)
        user = "unknown"
    return f"cli:{user}"
