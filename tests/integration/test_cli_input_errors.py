"""Bad command-line or configuration input: one line on stderr and exit status 2, never a traceback
(issue 10, items 16 and 17); and SIGTERM with a job-events stream open stops promptly (item 15)."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from pathlib import Path

import httpx
import pytest

from support.server import console_script, free_port, start_server

pytestmark = pytest.mark.integration


def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*console_script(), *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def _assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    # argparse's usage block (first line "usage:", the rest indented) comes before its error line.
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith(" ")]
    lines = [line for line in lines if not line.startswith("usage:")]
    assert len(lines) == 1, result.stderr[-3000:]
    assert any(f in lines[0] for f in fragments), lines[0]


def _serve(example_repo: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return _run(
        "serve", "--model-repository", str(example_repo), "--state-dir", str(tmp_path / "state"), *args
    )


@pytest.mark.parametrize("port", ["99999", "-1", "http"])
def test_a_port_out_of_range_is_refused(example_repo: Path, tmp_path: Path, port: str) -> None:
    _assert_one_line_error(_serve(example_repo, tmp_path, "--port", port), "port")


@pytest.mark.parametrize(
    ("variable", "value"), [("TIERSERVE_PORT", "99999"), ("TIERSERVE_MAX_BODY_BYTES", "lots")]
)
def test_a_bad_environment_value(example_repo: Path, tmp_path: Path, variable: str, value: str) -> None:
    result = subprocess.run(
        [*console_script(), "serve", "--model-repository", str(example_repo), "--state-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=120, check=False, env={**os.environ, variable: value},
    )  # fmt: skip
    _assert_one_line_error(result, "port" if variable == "TIERSERVE_PORT" else variable)


def test_a_config_that_does_not_exist(example_repo: Path, tmp_path: Path) -> None:
    result = _serve(example_repo, tmp_path, "--port", str(free_port()), "--config", str(tmp_path / "no.yaml"))
    _assert_one_line_error(result, "no.yaml")


def test_a_config_with_an_unknown_key(example_repo: Path, tmp_path: Path) -> None:
    config = tmp_path / "server.yaml"
    config.write_text("tiers: []\nteirs: []\n")
    result = _serve(example_repo, tmp_path, "--port", str(free_port()), "--config", str(config))
    _assert_one_line_error(result, "teirs")


def test_a_config_that_is_not_yaml(example_repo: Path, tmp_path: Path) -> None:
    config = tmp_path / "server.yaml"
    config.write_bytes(b"pools: [\n\xff")
    result = _serve(example_repo, tmp_path, "--port", str(free_port()), "--config", str(config))
    _assert_one_line_error(result, "server.yaml")


def test_an_unwritable_state_dir(example_repo: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where a directory should be")
    result = _run(
        "serve", "--model-repository", str(example_repo), "--port", str(free_port()),
        "--state-dir", str(blocker / "state"),
    )  # fmt: skip
    _assert_one_line_error(result, "state directory")


def test_simulate_with_a_missing_scenario(tmp_path: Path) -> None:
    result = _run("simulate", "--scenario", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "out"))
    _assert_one_line_error(result, "missing.yaml")


def test_simulate_with_a_broken_scenario(tmp_path: Path) -> None:
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text("seed: [not a number]\n")
    result = _run("simulate", "--scenario", str(scenario), "--out", str(tmp_path / "out"))
    _assert_one_line_error(result, "simulate")


def test_profile_with_a_bad_config(example_repo: Path, tmp_path: Path) -> None:
    config = tmp_path / "server.yaml"
    config.write_text("pools: nope\n")
    result = _run("profile", "--model-repository", str(example_repo), "--config", str(config))
    _assert_one_line_error(result, "pools")


def test_sigterm_with_a_job_events_stream_open_stops_promptly(example_repo: Path) -> None:
    # No job workers: the job stays queued and its events stream open. The graceful timeout is 600 s:
    # an open stream used to hold the server for all of it (30 s by default).
    env = {"TIERSERVE_JOB_WORKERS": "0", "TIERSERVE_GRACEFUL_SHUTDOWN_S": "600"}
    with (
        start_server(example_repo, env=env) as server,
        httpx.Client(base_url=server.base_url, timeout=60) as http,
    ):
        body = {"model": "simple", "inputs": [
            {"name": name, "datatype": "INT32", "shape": [1, 16], "data": list(range(16))}
            for name in ("INPUT0", "INPUT1")
        ]}  # fmt: skip
        job = http.post("/v1/jobs", json=body).json()
        opened = threading.Event()
        lines: list[str] = []

        def watch() -> None:
            with http.stream("GET", f"/v1/jobs/{job['id']}/events") as stream:
                for line in stream.iter_lines():
                    lines.append(line)
                    opened.set()

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        assert opened.wait(60), "the events stream sent nothing"
        server.process.send_signal(signal.SIGTERM)
        code = server.process.wait(120)  # far below the 600 s graceful timeout
        watcher.join(60)
        assert code == 0, server.log_tail()
        assert any(line.startswith("event: status") for line in lines)
        assert "Application shutdown failed" not in server.log_text()
