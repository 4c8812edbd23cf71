"""What ``tierserve keys`` and ``tierserve rollout`` share: a bad input is one line and exit 2,
and the audit log names the user who ran the command."""

from __future__ import annotations

import pytest

from tierserve.commands.common import cli_actor, run_command
from tierserve.errors import NotFound


async def succeeds() -> int:
    return 0


async def fails() -> int:
    raise NotFound("unknown API key 'nope'")


def test_a_command_error_is_one_line_and_exit_status_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_command("keys", succeeds()) == 0
    assert run_command("keys", fails()) == 2
    assert capsys.readouterr().err == "tierserve keys: unknown API key 'nope'\n"


def test_the_actor_is_the_user_running_the_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOGNAME", "alice")
    monkeypatch.setenv("USER", "alice")
    assert cli_actor() == "cli:alice"
