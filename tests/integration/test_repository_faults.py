"""A broken model affects only itself; a failed load or reload leaves what was serving untouched.

Each test reproduces an attack on a running server (issue 10, items 2-4, 12 and 18): garbage over a
serving model's file, a config.yaml that is not UTF-8, a version directory named "²", a failed load
of a new model, a pool whose backend cannot be built, and Triton's start-up choices.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from support.server import RunningServer, console_script, free_port, start_server
from support.v2 import assert_json_error, assert_serves_simple

pytestmark = pytest.mark.integration

DEADLINE_S = 60.0


def _copy(example_repo: Path, dest: Path, *names: str) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copytree(example_repo / name, dest / name)
    return dest


def _break_config(repo: Path, name: str) -> None:
    (repo / name / "config.yaml").write_bytes(b"max_batch_size: 8\n# \xff\xfe not UTF-8\n")


def _poll(fetch: Callable[[], Any], ok: Callable[[Any], bool], what: str) -> Any:
    """Poll ``fetch`` until ``ok`` holds (a generous deadline; not a timing assumption)."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        value = fetch()
        if ok(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: still {value!r} after {DEADLINE_S:.0f} s")
        time.sleep(0.05)


def _index(http: httpx.Client) -> list[dict[str, str]]:
    response = http.post("/v2/repository/index", json={})
    assert response.status_code == 200, response.text
    rows: list[dict[str, str]] = response.json()
    return rows


def _start_not_ready(repo: Path, extra_args: tuple[str, ...] = ()) -> RunningServer:
    """A server expected to stay 503 on readiness: started, then polled until it is live."""
    from support.server import _launch  # the launcher without the wait for 200

    server = _launch(repo, None, extra_args)
    try:
        with httpx.Client(base_url=server.base_url, timeout=5.0) as http:
            _poll(lambda: _status(http, "/v2/health/live"), lambda s: s == 200, "live")
            _poll(lambda: _ready_body(http), lambda b: b.get("reason") != "loading models", "loaded")
    except BaseException:
        server.cleanup()
        raise
    return server


def _status(http: httpx.Client, path: str) -> int:
    try:
        return http.get(path).status_code
    except httpx.TransportError:
        return 0


def _ready_body(http: httpx.Client) -> dict[str, Any]:
    try:
        response = http.get("/v2/health/ready")
    except httpx.TransportError:
        return {}
    body: dict[str, Any] = response.json()
    return body


@pytest.fixture
def repo(example_repo: Path, tmp_path: Path) -> Path:
    return _copy(example_repo, tmp_path / "models", "simple", "identity_fp32")


def test_a_failed_reload_leaves_the_serving_version_serving(repo: Path) -> None:
    with start_server(repo) as server, httpx.Client(base_url=server.base_url, timeout=30) as http:
        assert_serves_simple(http)
        (repo / "simple" / "1" / "model.onnx").write_bytes(b"garbage, not an ONNX graph" * 100)
        message = assert_json_error(http.post("/v2/repository/models/simple/load"), 400)
        assert "simple" in message and "serving the version loaded before" in message
        assert_serves_simple(http)  # Triton's behaviour: the old version goes on serving
        assert http.get("/v2/models/simple/ready").status_code == 200
        assert http.get("/v2/health/ready").status_code == 200
        row = next(r for r in _index(http) if r["name"] == "simple")
        assert row["state"] == "READY" and "reload failed" in row["reason"]
        # A broken config.yaml on reload: the same.
        _break_config(repo, "simple")
        assert_json_error(http.post("/v2/repository/models/simple/load"), 400)
        assert_serves_simple(http)


def test_a_broken_model_affects_only_itself(repo: Path) -> None:
    _break_config(repo, "identity_fp32")
    superscript = repo / "simple" / "²"  # str.isdigit() is true; int() refuses it
    superscript.mkdir()
    shutil.copy(repo / "simple" / "1" / "model.onnx", superscript / "model.onnx")
    server = _start_not_ready(repo)
    try:
        with httpx.Client(base_url=server.base_url, timeout=30) as http:
            body = _ready_body(http)
            assert body["ready"] is False and "identity_fp32" in body["reason"], body
            assert "UTF-8" in body["reason"] or "utf-8" in body["reason"]
            assert_serves_simple(http)  # the other model serves, its "²" directory ignored
            assert http.get("/v2/models/simple").json()["versions"] == ["1"]
            rows = {r["name"]: r for r in _index(http)}
            assert rows["identity_fp32"]["state"] == "UNAVAILABLE" and rows["identity_fp32"]["reason"]
            assert rows["simple"]["state"] == "READY"
            for path in ("/v2/models/simple/versions/²", "/v2/models/simple/versions/²/ready"):
                assert_json_error(http.get(path), 404)
            # Fixed on disk and loaded again: the failure is cleared, the server is ready.
            (repo / "identity_fp32" / "config.yaml").unlink()
            assert http.post("/v2/repository/models/identity_fp32/load").status_code == 200
            assert http.get("/v2/health/ready").json() == {"ready": True}
        assert server.stop() == 0
        log = server.log_text()
        assert "Application shutdown failed" not in log and "Traceback" not in log, log[-3000:]
    finally:
        server.cleanup()


def test_removing_a_model_that_failed_at_start_clears_its_failure(repo: Path) -> None:
    _break_config(repo, "identity_fp32")
    server = _start_not_ready(repo)
    try:
        with httpx.Client(base_url=server.base_url, timeout=30) as http:
            assert http.get("/v2/health/ready").status_code == 503
            shutil.rmtree(repo / "identity_fp32")
            assert http.get("/v2/health/ready").json() == {"ready": True}
            assert "identity_fp32" not in {r["name"] for r in _index(http)}
    finally:
        server.cleanup()


def test_a_failed_load_of_a_new_model_does_not_drain_the_server(repo: Path) -> None:
    with start_server(repo) as server, httpx.Client(base_url=server.base_url, timeout=30) as http:
        broken = repo / "broken"
        (broken / "1").mkdir(parents=True)
        (broken / "1" / "model.onnx").write_bytes(b"not a model")
        message = assert_json_error(http.post("/v2/repository/models/broken/load"), 400)
        assert "broken" in message
        assert http.get("/v2/health/ready").status_code == 200
        row = next(r for r in _index(http) if r["name"] == "broken")
        assert row["state"] == "UNAVAILABLE" and row["reason"]
        shutil.rmtree(broken)
        assert "broken" not in {r["name"] for r in _index(http)}
        assert_serves_simple(http)


def test_strict_readiness_off_is_ready_with_a_broken_model(repo: Path) -> None:
    _break_config(repo, "identity_fp32")
    with (
        start_server(repo, extra_args=["--strict-readiness", "false"]) as server,
        httpx.Client(base_url=server.base_url, timeout=30) as http,
    ):
        assert http.get("/v2/health/ready").json() == {"ready": True}
        assert_serves_simple(http)


def test_exit_on_error_exits_with_one_line(repo: Path, tmp_path: Path) -> None:
    _break_config(repo, "identity_fp32")
    result = subprocess.run(
        [
            *console_script(), "serve", "--model-repository", str(repo), "--port", str(free_port()),
            "--state-dir", str(tmp_path / "state"), "--exit-on-error", "true",
        ],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    assert "identity_fp32" in result.stderr and "--exit-on-error" in result.stderr
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
