"""Start a real MLServer (from its own virtualenv) serving one ONNX model, and stop it reliably.

Example::

    with start_mlserver(repo / "mlp" / "1" / "model.onnx", "mlp", tmp_path / "mlserver") as peer:
        httpx.get(f"{peer.base_url}/v2/models/mlp/ready")

MLServer runs from ``.cache/mlserver-venv`` (``scripts/mlserver-env.sh``, created on first use:
a minute or so; ``TIERSERVE_TEST_MLSERVER_VENV`` names another directory). When that environment
cannot be created (e.g. the package index is unreachable) the calling test is skipped; any other
failure is an error. The server is one process (``parallel_workers: 0``) on free ports (HTTP, gRPC,
metrics) with the custom runtime in ``support/mlserver_runtime.py``, in a fresh ``settings-*``
directory under ``workdir`` (left there afterwards) where it logs to ``mlserver.log``; the log's
tail ends the message of a start failure.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO

import httpx
import pytest

from support.server import RunningServer, ServerStartError, free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
ENV_SCRIPT = REPO_ROOT / "scripts" / "mlserver-env.sh"
RUNTIME = Path(__file__).with_name("mlserver_runtime.py")
ENV_TIMEOUT_S = 240.0  # a first creation downloads ~150 MB of wheels (~40 s here); under pytest's 300 s
ENV_CANNOT_CREATE = 3  # scripts/mlserver-env.sh: the environment could not be created
READY_TIMEOUT_S = 60.0
PORT_ATTEMPTS = 3


@functools.cache
def _environment() -> tuple[Path | None, str]:
    """(MLServer's python, "") once the environment works, else (None, why); created at most once."""
    venv = os.environ.get("TIERSERVE_TEST_MLSERVER_VENV")
    process = subprocess.Popen(
        ["bash", str(ENV_SCRIPT), *([venv] if venv else [])],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,  # its own process group: a timeout ends pip too, and its lock
    )
    try:
        stdout, stderr = process.communicate(timeout=ENV_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        return None, f"scripts/mlserver-env.sh did not finish within {ENV_TIMEOUT_S:.0f} s (package index?)"
    output = (stdout + stderr)[-3000:]
    if process.returncode == ENV_CANNOT_CREATE:
        return None, f"the MLServer virtualenv cannot be created here:\n{output}"
    if process.returncode != 0:
        raise RuntimeError(f"scripts/mlserver-env.sh failed with {process.returncode}:\n{output}")
    mlserver = Path(stdout.strip().splitlines()[-1]).with_name("mlserver")
    if not (mlserver.is_file() and os.access(mlserver, os.X_OK)):
        raise RuntimeError(f"scripts/mlserver-env.sh printed no python with an mlserver beside it:\n{output}")
    return mlserver.with_name("python"), ""


def mlserver_executable() -> Path:
    """``<venv>/bin/mlserver``, creating the venv on first use; skips the test when it cannot be made."""
    python, why = _environment()
    if python is None:
        pytest.skip(why)
    return python.with_name("mlserver")


class RunningMLServer(RunningServer):
    """A running ``mlserver start``: ``base_url`` (V2 REST), ``metrics_url`` (Prometheus text)."""

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        ports: tuple[int, int, int],
        workdir: Path,
        log_path: Path,
        log_file: IO[bytes],
        model_name: str,
    ) -> None:
        super().__init__(process, ports[0], workdir, log_path, log_file)
        self.grpc_port = ports[1]
        self.metrics_port = ports[2]
        self.metrics_url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        self.model_name = model_name

    def cleanup(self) -> None:
        """Kill the process; the working directory is the caller's and stays (its log included)."""
        self.kill()

    def __repr__(self) -> str:
        return f"RunningMLServer(pid={self.process.pid}, url={self.url!r}, model={self.model_name!r})"


def start_mlserver(
    model_path: Path, model_name: str, workdir: Path, *, ready_timeout: float = READY_TIMEOUT_S
) -> RunningMLServer:
    """Start MLServer serving ``model_path`` (an ONNX file) as ``model_name``; return once the server
    and the model are ready. Use it as a context manager: leaving it kills the process."""
    mlserver = mlserver_executable()
    workdir.mkdir(parents=True, exist_ok=True)
    for attempt in range(PORT_ATTEMPTS):
        server = _launch(mlserver, model_path.resolve(), model_name, workdir)
        try:
            _wait_ready(server, ready_timeout)
        except ServerStartError:
            server.kill()
            lost_port_race = "address already in use" in server.log_text().lower()
            if lost_port_race and attempt + 1 < PORT_ATTEMPTS:
                continue
            raise
        except BaseException:
            server.kill()
            raise
        return server
    raise AssertionError("unreachable")


def _launch(mlserver: Path, model_path: Path, model_name: str, workdir: Path) -> RunningMLServer:
    ports = _distinct_free_ports(3)
    settings_dir = Path(tempfile.mkdtemp(prefix="settings-", dir=workdir))
    (settings_dir / "settings.json").write_text(
        json.dumps(
            {
                "debug": True,  # access log lines: the requests MLServer received
                "parallel_workers": 0,  # one process: inference in the server itself
                "host": "127.0.0.1",
                "http_port": ports[0],
                "grpc_port": ports[1],  # cannot be switched off in 1.7.1: a free port on loopback
                "metrics_port": ports[2],
                "metrics_endpoint": "/metrics",
                "metrics_dir": str(settings_dir / ".metrics"),
                "environments_dir": str(settings_dir / ".envs"),
                "load_models_at_startup": True,
            },
            indent=2,
        )
    )
    model_dir = settings_dir / "models" / model_name
    model_dir.mkdir(parents=True)
    (model_dir / "model-settings.json").write_text(
        json.dumps(
            {
                "name": model_name,
                "implementation": "mlserver_runtime.OnnxModel",
                "parameters": {"uri": str(model_path)},
            },
            indent=2,
        )
    )
    # The runtime goes on MLServer's path alone: tests/support also holds this module, which is
    # called mlserver and would hide the real package.
    runtime_dir = settings_dir / "runtime"
    runtime_dir.mkdir()
    shutil.copy2(RUNTIME, runtime_dir / RUNTIME.name)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLSERVER_", "PYTHON", "VIRTUAL_ENV"))}
    env.update(PYTHONPATH=str(runtime_dir), PYTHONUNBUFFERED="1", PATH=f"{mlserver.parent}:{env['PATH']}")
    log_path = settings_dir / "mlserver.log"
    log_file = log_path.open("wb")
    try:
        process = subprocess.Popen(
            [str(mlserver), "start", str(settings_dir)],
            cwd=settings_dir,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
    except BaseException:
        log_file.close()
        raise
    return RunningMLServer(process, ports, settings_dir, log_path, log_file, model_name)


def _distinct_free_ports(n: int) -> tuple[int, int, int]:
    ports: set[int] = set()
    while len(ports) < n:
        ports.add(free_port())
    a, b, c = sorted(ports)
    return a, b, c


def _wait_ready(server: RunningMLServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    with httpx.Client(base_url=server.base_url, timeout=2.0) as client:
        while True:
            code = server.process.poll()
            if code is not None:
                raise ServerStartError(
                    f"mlserver exited with {code} before it was ready; log tail:\n{server.log_tail()}"
                )
            try:
                for path in ("/v2/health/ready", f"/v2/models/{server.model_name}/ready"):
                    response = client.get(path)
                    if response.status_code != 200:
                        last = f"{path}: HTTP {response.status_code}: {response.text[:200]}"
                        break
                else:
                    return
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}"
            if time.monotonic() > deadline:
                raise ServerStartError(
                    f"mlserver was not ready within {timeout:.0f} s ({last}); log tail:\n{server.log_tail()}"
                )
            time.sleep(0.1)  # polling interval of a bounded wait, not synchronisation by sleeping
