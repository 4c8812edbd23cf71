"""A real server for the tests (PostgreSQL, Redis), started once per test process by one of the
project's ``scripts/*.sh`` and stopped at exit.

The script answers ``<probe verb>`` with exit 0 when the server binaries exist, ``start`` with
``KEY=value`` lines (at least ``DIR``), and ``stop DIR``. Tests skip, with the reason, only when the
binaries or the Python client are missing; ``.ci/run`` installs both, so CI runs them.
"""

from __future__ import annotations

import atexit
import importlib.util
import subprocess
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


class ScriptedServer:
    def __init__(self, script: str, *, probe: str, client: str, start_timeout_s: float) -> None:
        self.script = SCRIPTS / script
        self.probe = probe
        self.client = client
        self.start_timeout_s = start_timeout_s
        self._values: dict[str, str] | None = None
        self._failure: str | None = None

    def skip_reason(self) -> str | None:
        """Why this server cannot run here, or None."""
        if importlib.util.find_spec(self.client) is None:
            return f"the Python package {self.client} is not installed (pip install -e '.[test]')"
        found = subprocess.run(["bash", str(self.script), self.probe], capture_output=True, check=False)
        if found.returncode != 0:
            return f"the server is not installed (run scripts/{self.script.name} install)"
        return None

    def values(self) -> dict[str, str]:
        """What ``start`` printed (started on first use); skips the test when the server is missing."""
        if self._values is not None:
            return self._values
        reason = self.skip_reason()
        if reason is not None:
            pytest.skip(reason)
        if self._failure is not None:
            pytest.fail(self._failure)
        started = subprocess.run(
            ["bash", str(self.script), "start"],
            capture_output=True,
            text=True,
            timeout=self.start_timeout_s,
            check=False,
        )
        if started.returncode != 0:
            self._failure = (
                f"scripts/{self.script.name} start failed ({started.returncode}):\n{started.stderr}"
            )
            pytest.fail(self._failure)
        self._values = dict(line.split("=", 1) for line in started.stdout.splitlines() if "=" in line)
        atexit.register(self._stop, self._values["DIR"])
        return self._values

    def _stop(self, directory: str) -> None:
        subprocess.run(
            ["bash", str(self.script), "stop", directory], capture_output=True, timeout=60, check=False
        )
