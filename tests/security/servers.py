"""Helpers for the security integration tests: keys made through the real CLI, a repository with
``simple`` and ``slow``, headers, polling."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from support.models import write_slow_repository
from support.server import tierserve_command
from support.v2 import simple_json_request, simple_rows

T = TypeVar("T")

# Servers in these tests see keys made by the CLI (or another server) within this.
FAST_REFRESH_ENV = {"TIERSERVE_KEY_REFRESH_S": "0.2"}


@dataclass(frozen=True)
class Key:
    id: str
    key: str
    tenant: str
    role: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


def store_args(state_dir: Path | None = None, database: str | None = None) -> list[str]:
    args = []
    if state_dir is not None:
        args += ["--state-dir", str(state_dir)]
    if database:
        args += ["--database", database]
    return args


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [*tierserve_command(), *args], capture_output=True, text=True, timeout=60, check=False
    )
    if check:
        assert result.returncode == 0, f"tierserve {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def make_key(
    tenant: str,
    role: str,
    *,
    state_dir: Path | None = None,
    database: str | None = None,
    extra: Sequence[str] = (),
) -> Key:
    """``tierserve keys create ... --json``."""
    out = cli(
        "keys",
        "create",
        "--tenant",
        tenant,
        "--role",
        role,
        "--json",
        *store_args(state_dir, database),
        *extra,
    )
    doc = json.loads(out.stdout)
    return Key(doc["id"], doc["key"], doc["tenant"], doc["role"])


def write_security_repository(root: Path, example_repo: Path) -> Path:
    """``simple`` (from the example repository) and ``slow`` (one replica, no batching)."""
    write_slow_repository(root, max_batch_size=0)
    shutil.copytree(example_repo / "simple", root / "simple")
    return root


def simple_body(seed: int = 0, **extra: Any) -> dict[str, Any]:
    a, b = simple_rows(1, seed=seed)
    return simple_json_request(a, b, **extra)


def slow_body(index: float, work: float) -> dict[str, Any]:
    return {"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 4], "data": [work, index, 0.0, 0.0]}]}


def wait_for(probe: Callable[[], T | None], timeout: float = 10.0, what: str = "condition") -> T:
    """Poll ``probe`` until it returns something truthy (a bounded wait, not synchronisation by sleep)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)
