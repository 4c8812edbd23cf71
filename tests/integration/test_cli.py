"""The command line: version, help, argument errors, and a graceful SIGTERM under load."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from support.models import slow_input
from support.server import RunningServer, console_script, start_server, tierserve_command
from support.v2 import metric_value

pytestmark = pytest.mark.integration


def _run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*console_script(), *args], capture_output=True, text=True, timeout=timeout, check=False
    )


# -- version and help --------------------------------------------------------------------------


def test_version() -> None:
    result = _run("--version")
    assert result.returncode == 0, result.stderr
    from tierserve import __version__

    assert result.stdout.strip() == f"tierserve {__version__}"


def test_version_through_python_module() -> None:
    result = subprocess.run(
        [*tierserve_command(), "--version"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("tierserve ")


def test_help_lists_subcommands() -> None:
    result = _run("--help")
    assert result.returncode == 0, result.stderr
    for word in ("serve", "example-models", "--version"):
        assert word in result.stdout


@pytest.mark.parametrize(
    ("command", "options"),
    [
        ("serve", ["--model-repository", "--host", "--port", "--log-level", "--max-body-bytes"]),
        ("example-models", ["DIR", "--no-minilm"]),
    ],
)
def test_subcommand_help_mentions_its_options(command: str, options: list[str]) -> None:
    result = _run(command, "--help")
    assert result.returncode == 0, result.stderr
    for option in options:
        assert option in result.stdout, f"{option} missing from `tierserve {command} --help`"


def test_no_command_prints_usage_and_fails() -> None:
    result = _run()
    assert result.returncode != 0
    assert "usage:" in (result.stdout + result.stderr).lower()


def test_unknown_option_fails() -> None:
    result = _run("serve", "--no-such-option")
    assert result.returncode != 0
    assert "--no-such-option" in result.stderr


# -- serve argument errors ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["missing", "file"])
def test_serve_rejects_a_repository_that_is_not_a_directory(tmp_path: Path, kind: str) -> None:
    repo = tmp_path / "not-a-repo"
    if kind == "file":
        repo.write_text("I am a file\n")
    result = _run("serve", "--model-repository", str(repo), "--port", "1", timeout=60)
    assert result.returncode != 0
    assert "not a directory" in result.stderr
    assert str(repo) in result.stderr


def test_serve_rejects_a_non_integer_port(tmp_path: Path) -> None:
    result = _run("serve", "--model-repository", str(tmp_path), "--port", "eighty")
    assert result.returncode != 0
    assert "--port" in result.stderr


def test_example_models_writes_the_repository(tmp_path: Path) -> None:
    result = _run("example-models", str(tmp_path / "repo"), "--no-minilm")
    assert result.returncode == 0, result.stderr
    assert "simple" in result.stdout
    assert (tmp_path / "repo" / "simple" / "1" / "model.onnx").is_file()
    assert (tmp_path / "repo" / "simple" / "config.yaml").read_text().strip() == "max_batch_size: 8"


def test_max_body_bytes_from_environment(example_repo: Path) -> None:
    with start_server(example_repo, env={"TIERSERVE_MAX_BODY_BYTES": "512"}) as server:
        response = httpx.post(
            f"{server.base_url}/v2/models/simple/infer", content=b"{" + b" " * 1024 + b"}", timeout=30
        )
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/json"
    assert "512" in response.json()["error"]


# -- SIGTERM with requests in flight -----------------------------------------------------------

IN_FLIGHT = 5


@dataclass
class SigtermOutcome:
    pending_at_signal: int  # requests without a response when SIGTERM was sent
    responses: list[httpx.Response]
    returncode: int
    log: str


def _post_slow(base_url: str, index: int) -> httpx.Response:
    x = slow_input(index)
    body = {"inputs": [{"name": "X", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}]}
    return httpx.post(f"{base_url}/v2/models/slow/infer", json=body, timeout=120)


def _wait_until_in_flight(server: RunningServer, futures: list[Future[httpx.Response]], count: int) -> None:
    """Until ``count`` requests are queued or running in the server.

    ``tierserve_queue_duration_seconds_count`` counts requests whose batch has started and
    ``tierserve_queue_depth`` those still queued; a request moving from one to the other is briefly
    in neither, so their sum never overstates what has arrived.
    """
    deadline = time.monotonic() + 60
    with httpx.Client(base_url=server.base_url, timeout=10) as http:
        while True:
            for future in futures:
                if future.done() and future.exception() is not None:
                    raise AssertionError(f"a request failed early: {future.exception()!r}")
            text = http.get("/metrics").text
            started = metric_value(text, "tierserve_queue_duration_seconds_count", model="slow")
            queued = metric_value(text, "tierserve_queue_depth", model="slow")
            if started + queued >= count:
                return
            assert time.monotonic() < deadline, f"only {started + queued:.0f} of {count} requests arrived"
            time.sleep(0.01)  # polling interval of a bounded wait


@pytest.fixture(scope="module")
def sigterm_outcome(slow_repo: Path) -> Iterator[SigtermOutcome]:
    """Start a server on the slow model, put IN_FLIGHT requests in flight, SIGTERM it, collect."""
    server = start_server(slow_repo)
    try:
        with ThreadPoolExecutor(max_workers=IN_FLIGHT) as pool:
            futures = [pool.submit(_post_slow, server.base_url, i) for i in range(IN_FLIGHT)]
            _wait_until_in_flight(server, futures, IN_FLIGHT)
            pending = sum(not future.done() for future in futures)
            server.process.send_signal(signal.SIGTERM)
            responses = [future.result(timeout=120) for future in futures]
        returncode = server.process.wait(timeout=60)
        yield SigtermOutcome(pending, responses, returncode, server.log_text())
    finally:
        server.cleanup()


def test_sigterm_lets_in_flight_requests_finish(sigterm_outcome: SigtermOutcome) -> None:
    assert sigterm_outcome.pending_at_signal >= 2, "the signal came after the requests had finished"
    for index, response in enumerate(sigterm_outcome.responses):
        assert response.status_code == 200, response.text
        (output,) = response.json()["outputs"]
        assert output["name"] == "Y"
        assert output["data"] == slow_input(index).ravel().tolist()


def test_sigterm_stops_the_process_without_errors(sigterm_outcome: SigtermOutcome) -> None:
    assert sigterm_outcome.returncode in (0, -signal.SIGTERM), sigterm_outcome.log[-3000:]
    assert "Traceback" not in sigterm_outcome.log
    assert "Shutting down" in sigterm_outcome.log


def test_sigterm_exits_zero(sigterm_outcome: SigtermOutcome) -> None:
    assert sigterm_outcome.returncode == 0


def test_sigint_exits_zero_without_a_traceback(example_repo: Path) -> None:
    server = start_server(example_repo)
    try:
        returncode = server.stop(signal.SIGINT)
        log = server.log_text()
    finally:
        server.cleanup()
    assert "Traceback" not in log, log[-3000:]
    assert returncode == 0
