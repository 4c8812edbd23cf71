"""The inference route's own ASGI entry: what it matches, and that a real server answers through it
as through the application (errors, versions), and that a client that goes away while its request
waits gets its request cancelled."""

from __future__ import annotations

import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from security.servers import wait_for
from support.models import SLOW_WORK, slow_input, write_slow_repository
from support.server import RunningServer, start_server
from support.v2 import UNKNOWN_MODEL_PREFIX, assert_json_error, model_stats, simple_json_request, simple_rows
from tierserve.api.hot import infer_target
from tierserve.examples.repository import write_example_repository


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/v2/models/simple/infer", {"model_name": "simple"}),
        ("/v2/models/simple/versions/2/infer", {"model_name": "simple", "model_version": "2"}),
        ("/v2/models//infer", None),
        ("/v2/models/simple/versions//infer", None),
        ("/v2/models/simple/ready", None),
        ("/v2/models/a/b/infer", None),
        ("/v2/models/simple/versions/2/extra/infer", None),
    ],
)
def test_infer_target(path: str, params: dict[str, str] | None) -> None:
    assert infer_target(path) == params


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hot-repo")
    write_slow_repository(root, max_batch_size=0)  # one replica, one request per batch
    example = root / "examples"
    write_example_repository(example, include_minilm=False)
    shutil.copytree(example / "simple", root / "simple")
    shutil.rmtree(example)
    return root


@pytest.fixture(scope="module")
def server(repo: Path) -> Iterator[RunningServer]:
    with start_server(repo, extra_args=["--max-body-bytes", "100000"]) as running:
        yield running


@pytest.mark.integration
def test_answers_and_errors_through_the_hot_path(server: RunningServer) -> None:
    a, b = simple_rows(1)
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        for path in ("/v2/models/simple/infer", "/v2/models/simple/versions/1/infer"):
            response = http.post(path, json=simple_json_request(a, b, id="x"))
            assert response.status_code == 200 and response.headers["content-type"] == "application/json"
            doc = response.json()
            assert doc["id"] == "x" and doc["model_version"] == "1"
        message = assert_json_error(http.post("/v2/models/nope/infer", json=simple_json_request(a, b)), 404)
        assert message.startswith(UNKNOWN_MODEL_PREFIX)
        assert_json_error(
            http.post("/v2/models/simple/versions/7/infer", json=simple_json_request(a, b)), 404
        )
        assert_json_error(http.post("/v2/models/simple/infer", content=b"{not json"), 400)
        assert_json_error(http.post("/v2/models/simple/infer", content=b" " * 200_000), 413)
        # Other routes still go through the application.
        assert http.get("/v2/models/simple/infer").status_code == 405
        assert http.get("/v2/models/simple").json()["name"] == "simple"


def raw_infer(port: int, x: list[list[float]]) -> bytes:
    body = orjson.dumps({"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 4], "data": x}]})
    head = "POST /v2/models/slow/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    return f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body


@pytest.mark.integration
def test_a_client_that_goes_away_gets_its_request_cancelled(server: RunningServer) -> None:
    with httpx.Client(base_url=server.base_url, timeout=120) as http:
        before = model_stats(http, "slow")
        first: list[httpx.Response] = []
        long_work = slow_input(0, work=SLOW_WORK * 4).tolist()
        running = threading.Thread(
            target=lambda: first.append(
                http.post(
                    "/v2/models/slow/infer",
                    json={"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 4], "data": long_work}]},
                )
            )
        )
        running.start()
        try:
            with socket.create_connection(("127.0.0.1", server.port)) as queued:
                queued.sendall(raw_infer(server.port, slow_input(1).tolist()))

                def waiting() -> bool:
                    return any(
                        line.startswith(b'tierserve_queue_depth{model="slow"') and not line.endswith(b" 0.0")
                        for line in http.get("/metrics").content.splitlines()
                    )

                wait_for(waiting, timeout=60, what="the second request to wait in the queue")
            # Closed: the server notices while the first still runs, and cancels the queued one.
            wait_for(
                lambda: (
                    model_stats(http, "slow")["inference_stats"]["fail"]["count"]
                    > before["inference_stats"]["fail"]["count"]
                ),
                timeout=60,
                what="the abandoned request to be cancelled",
            )
        finally:
            running.join(120)
        assert first and first[0].status_code == 200
