"""Start a real ``tierserve serve`` process on a free port and stop it reliably.

Example::

    with start_server(repo) as server:
        httpx.get(f"{server.base_url}/v2/health/ready")

The process writes stdout and stderr to a log file in its own temporary directory; when the
server does not become ready (or exits early) the error carries the tail of that log.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO

import httpx

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
LOG_TAIL_CHARS = 4000
PORT_ATTEMPTS = 3


def free_port() -> int:
    """A TCP port that nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def tierserve_command() -> list[str]:
    """The CLI run by this interpreter (so the server uses the same environment as the tests)."""
    return [sys.executable, "-m", "tierserve.cli"]


def console_script() -> list[str]:
    """The installed ``tierserve`` console script next to this interpreter, else ``tierserve_command()``."""
    script = Path(sys.executable).with_name("tierserve")
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return tierserve_command()


class ServerStartError(RuntimeError):
    """The server exited or did not become ready; the message ends with its log tail."""


class RunningServer:
    def __init__(
        self,
        process: subprocess.Popen[bytes],
        port: int,
        workdir: Path,
        log_path: Path,
        log_file: IO[bytes] | None = None,
    ) -> None:
        self.process = process
        self.port = port
        self.url = f"127.0.0.1:{port}"
        self.base_url = f"http://{self.url}"
        self.workdir = workdir
        self.log_path = log_path
        self._log_file = log_file  # the parent's handle on the log; closed once the process is gone

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, chars: int = LOG_TAIL_CHARS) -> str:
        return self.log_text()[-chars:]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT_S) -> int:
        """Send ``sig`` and wait for the exit; kill if it takes longer than ``timeout``. The returncode."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._close_log()
        return int(self.process.returncode)

    def kill(self) -> None:
        """SIGKILL (if still running) and reap; safe to call repeatedly."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            self.process.wait(STOP_TIMEOUT_S)
        self._close_log()

    def cleanup(self) -> None:
        """Kill the process and remove its working directory (log included)."""
        self.kill()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None:  # leave the server's side of the story in the test's captured output
            print(f"--- {self!r} log tail ---\n{self.log_tail()}", file=sys.stderr)
        self.cleanup()

    def __repr__(self) -> str:
        return f"RunningServer(pid={self.process.pid}, url={self.url!r})"


def start_server(
    repo: Path,
    *,
    env: Mapping[str, str] | None = None,
    extra_args: Sequence[str] = (),
    ready_timeout: float = READY_TIMEOUT_S,
) -> RunningServer:
    """Start ``tierserve serve`` on ``repo`` and return once ``/v2/health/ready`` answers 200.

    ``env`` entries are added to (and override) this process's environment. A port that another
    process grabbed between our probe and the server's bind is retried on a fresh port.
    """
    for attempt in range(PORT_ATTEMPTS):
        server = _launch(repo, env, extra_args)
        try:
            _wait_ready(server, ready_timeout)
        except ServerStartError:
            server.kill()
            lost_port_race = "address already in use" in server.log_text().lower()
            if lost_port_race and attempt + 1 < PORT_ATTEMPTS:
                server.cleanup()
                continue
            raise
        except BaseException:
            server.kill()
            raise
        return server
    raise AssertionError("unreachable")


def _launch(repo: Path, env: Mapping[str, str] | None, extra_args: Sequence[str]) -> RunningServer:
    workdir = Path(tempfile.mkdtemp(prefix="tierserve-server-"))
    log_path = workdir / "server.log"
    port = free_port()
    command = [
        *tierserve_command(),
        "serve",
        "--model-repository",
        str(repo),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *extra_args,
    ]
    if "--state-dir" not in extra_args:  # each server its own job store and variant cache
        command += ["--state-dir", str(workdir / "state")]
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    log_file = log_path.open("wb")
    try:
        process = subprocess.Popen(
            command, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=full_env
        )
    except BaseException:
        log_file.close()
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    return RunningServer(process, port, workdir, log_path, log_file)


def _bound(server: RunningServer) -> bool:
    """Whether ``server``'s own process holds a listening socket on its port (Linux's /proc; True
    where there is none to ask)."""
    try:
        listening = _listening_inodes(server.port)
        held = {os.readlink(fd) for fd in Path(f"/proc/{server.pid}/fd").iterdir()}
    except OSError:
        return not Path("/proc/net/tcp").exists()
    return any(f"socket:[{inode}]" in held for inode in listening)


def _listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError), open(table) as rows:
            next(rows)  # the header
            for row in rows:
                fields = row.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                    inodes.add(fields[9])
    return inodes


def _wait_ready(server: RunningServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    with httpx.Client(base_url=server.base_url, timeout=2.0) as client:
        while True:
            code = server.process.poll()
            if code is not None:
                raise ServerStartError(
                    f"tierserve exited with {code} before it was ready; log tail:\n{server.log_tail()}"
                )
            try:
                response = client.get("/v2/health/ready")
                # Ours, not whatever else took the port meanwhile (another session's metrics exporter
                # answers every path with 200).
                if response.status_code == 200 and _bound(server):
                    return
                last = f"HTTP {response.status_code}: {response.text[:200]}"
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}"
            if time.monotonic() > deadline:
                raise ServerStartError(
                    f"tierserve was not ready within {timeout:.0f} s ({last}); log tail:\n{server.log_tail()}"
                )
            time.sleep(0.05)  # polling interval of a bounded wait, not synchronisation by sleeping
