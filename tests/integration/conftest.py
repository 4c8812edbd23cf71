"""Fixtures for the integration suite: the example repository (built once, through the CLI), a shared
running server, and clients for it.

The shared server is session-scoped, so tests that read counters compare before/after values rather
than absolute ones, and tests that unload or load models or stop servers start their own.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import tritonclient.http as httpclient

_TESTS_DIR = Path(__file__).resolve().parents[1]
if str(_TESTS_DIR) not in sys.path:  # so that ``support`` imports under any pytest import mode
    sys.path.insert(0, str(_TESTS_DIR))

from support.models import write_slow_repository  # noqa: E402
from support.server import RunningServer, start_server, tierserve_command  # noqa: E402
from support.v2 import EXAMPLE_MODELS  # noqa: E402


@pytest.fixture(scope="session")
def example_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``tierserve example-models DIR --no-minilm``, run once per session through the CLI."""
    repo = tmp_path_factory.mktemp("example-repo") / "models"
    result = subprocess.run(
        [*tierserve_command(), "example-models", str(repo), "--no-minilm"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"example-models failed:\n{result.stdout}\n{result.stderr}"
    assert sorted(p.name for p in repo.iterdir() if p.is_dir()) == EXAMPLE_MODELS
    return repo


@pytest.fixture(scope="session")
def server(example_repo: Path) -> Iterator[RunningServer]:
    """One server over the example repository, shared by the whole session."""
    with start_server(example_repo) as running:
        yield running


@pytest.fixture
def client(server: RunningServer) -> Iterator[httpclient.InferenceServerClient]:
    triton = httpclient.InferenceServerClient(url=server.url, network_timeout=30.0)
    try:
        yield triton
    finally:
        triton.close()


@pytest.fixture
def http(server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=30.0) as raw:
        yield raw


@pytest.fixture(scope="session")
def slow_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository of its own holding the test-only ``slow`` batching model."""
    return write_slow_repository(tmp_path_factory.mktemp("slow-repo"))
