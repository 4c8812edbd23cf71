"""A real MLServer as tierserve's remote pool, end to end.

MLServer (its own virtualenv, ``scripts/mlserver-env.sh``) serves the same ONNX model as tierserve
through the custom runtime in ``support/mlserver_runtime.py``. MLServer has no binary tensor
extension, so tierserve talks JSON tensors to it while its own clients send binary ones
(``tritonclient.http``'s default). The remote pool is priced below the local one, so the router
sends the traffic there; when MLServer dies mid-batch the batch is retried on ``cpu``, and once the
endpoint's breaker opens (and its health check fails) ``burst`` is no longer tried at all.

The model costs ~0.3 ms per row on one core whatever the batch size (a chain of Sin over 8192
values per row), so the ``cpu`` pool (10 per hour) costs more per item than ``burst`` (0.0001 per
1,000 requests). Its largest input value also buys rounds of a 1024x1024 MatMul that leave the
output unchanged (as in ``support.models``' ``slow``): a request that holds a batch on MLServer
long enough to kill the server under it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tritonclient.http as httpclient
from onnx import TensorProto, helper, numpy_helper

from support.mlserver import RunningMLServer, start_mlserver
from support.server import RunningServer, start_server
from support.v2 import metric_value, model_stats

pytestmark = pytest.mark.integration

MODEL = "remote_mlp"  # a name of its own: no profile file of another test seeds its estimates
WIDTH = 64  # X is FP32 [-1, WIDTH]
HIDDEN = 8192
OUTPUTS = 16  # Y is FP32 [-1, OUTPUTS]
SIN_ROUNDS = 16
LOOP_SIZE = 1024
MAX_BATCH_SIZE = 8
BLOCKER_WORK = 40.0  # rounds of the 1024x1024 MatMul: around a second on one core
RETRY_LINE = re.compile(rf"retrying {MODEL} after burst failed")


def build_model(path: Path) -> None:
    """``Y = MatMul(Sin^16(MatMul(X, W1)), W2)``, plus ``floor(max(relu(X)))`` rounds of work that add 0."""
    rng = np.random.default_rng(0)
    w1 = (rng.standard_normal((WIDTH, HIDDEN)) / np.sqrt(WIDTH)).astype(np.float32)
    w2 = (rng.standard_normal((HIDDEN, OUTPUTS)) / np.sqrt(HIDDEN)).astype(np.float32)
    eye = np.eye(LOOP_SIZE, dtype=np.float32)
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("MatMul", ["m_in", "E"], ["m_out"]),  # E from the outer scope
        ],
        "round",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("m_in", TensorProto.FLOAT, [LOOP_SIZE, LOOP_SIZE]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("m_out", TensorProto.FLOAT, [LOOP_SIZE, LOOP_SIZE]),
        ],
    )
    nodes = [helper.make_node("MatMul", ["X", "W1"], ["h0"])]
    nodes += [helper.make_node("Sin", [f"h{i}"], [f"h{i + 1}"]) for i in range(SIN_ROUNDS)]
    nodes += [
        helper.make_node("MatMul", [f"h{SIN_ROUNDS}", "W2"], ["y"]),
        helper.make_node("Relu", ["X"], ["positive"]),
        helper.make_node("ReduceMax", ["positive"], ["work"], keepdims=0),
        helper.make_node("Cast", ["work"], ["rounds"], to=TensorProto.INT64),
        helper.make_node("Loop", ["rounds", "", "E"], ["m"], body=body),
        # m stays the identity, so r - r is exactly 0 and Y == y bit for bit.
        helper.make_node("ReduceSum", ["m"], ["r"], keepdims=0),
        helper.make_node("Sub", ["r", "r"], ["zero"]),
        helper.make_node("Add", ["y", "zero"], ["Y"]),
    ]
    graph = helper.make_graph(
        nodes,
        MODEL,
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", WIDTH])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["batch", OUTPUTS])],
        [
            numpy_helper.from_array(w1, "W1"),
            numpy_helper.from_array(w2, "W2"),
            numpy_helper.from_array(eye, "E"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())


def rows(n: int, seed: int, *, work: float = 0.0) -> np.ndarray:
    """An X of ``n`` rows in [-0.5, 0.5) (no extra work), or with ``work`` rounds of it."""
    x = np.random.default_rng(seed).uniform(-0.5, 0.5, size=(n, WIDTH)).astype(np.float32)
    if work:
        x[0, 0] = work
    return x


def pools_config(path: Path, peer: RunningMLServer) -> Path:
    """The server config: a local cpu pool and MLServer as the cheaper remote ``burst`` pool."""
    path.write_text(
        "pools:\n"
        "  - {name: cpu, kind: onnx-cpu, cost_per_hour: 10}\n"
        f"  - {{name: burst, kind: remote, endpoints: ['http://127.0.0.1:{peer.port}'],\n"
        "      cost_per_1k_requests: 0.0001, concurrency: 2}\n"
    )
    return path


@dataclass
class Setup:
    model_path: Path
    peer: RunningMLServer
    front: RunningServer
    reference: ort.InferenceSession

    def expected(self, x: np.ndarray) -> np.ndarray:
        result: np.ndarray = self.reference.run(["Y"], {"X": x})[0]
        return result


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    root = tmp_path_factory.mktemp("remote-mlserver")
    repo = root / "models"
    model_path = repo / MODEL / "1" / "model.onnx"
    build_model(model_path)
    (repo / MODEL / "config.yaml").write_text(f"max_batch_size: {MAX_BATCH_SIZE}\n")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    reference = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    with start_mlserver(model_path, MODEL, root / "mlserver") as peer:
        config = pools_config(root / "server.yaml", peer)
        args = ["--config", str(config), "--state-dir", str(root / "state")]
        with start_server(repo, extra_args=args) as front:
            yield Setup(model_path, peer, front, reference)


@pytest.fixture
def http(setup: Setup) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=setup.front.base_url, timeout=60.0) as client:
        yield client


@pytest.fixture
def triton(setup: Setup) -> Iterator[httpclient.InferenceServerClient]:
    client = httpclient.InferenceServerClient(url=setup.front.url, network_timeout=60.0, concurrency=4)
    try:
        yield client
    finally:
        client.close()


def triton_inputs(x: np.ndarray) -> tuple[list[httpclient.InferInput], list[httpclient.InferRequestedOutput]]:
    """A binary request (tritonclient's default) for X, asking for Y in binary."""
    inp = httpclient.InferInput("X", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    return [inp], [httpclient.InferRequestedOutput("Y")]


def infer(triton: httpclient.InferenceServerClient, x: np.ndarray, model: str = MODEL) -> np.ndarray:
    inputs, outputs = triton_inputs(x)
    result = triton.infer(model, inputs, outputs=outputs)
    y = result.as_numpy("Y")
    assert y is not None
    return y


def assert_matches(got: np.ndarray, want: np.ndarray) -> None:
    assert got.dtype == np.float32 and got.shape == want.shape, (got.dtype, got.shape, want.shape)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def pool_requests(http: httpx.Client, model: str = MODEL) -> dict[str, int]:
    pools = model_stats(http, model).get("pool_stats", {})
    return {pool: int(counts["requests"]) for pool, counts in pools.items()}


def mlserver_successes(peer: RunningMLServer) -> float:
    """MLServer's own count of inference requests it answered for the model (Prometheus text).

    Parsed here rather than with ``support.v2``: MLServer's REST metrics carry path templates with
    braces in their label values."""
    text = httpx.get(peer.metrics_url, timeout=10.0).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith("model_infer_request_success_total{") and f'model="{MODEL}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def mlserver_infer_log_lines(peer: RunningMLServer) -> int:
    return peer.log_text().count(f'POST /v2/models/{MODEL}/infer HTTP/1.1" 200')


def burst_batches_started(http: httpx.Client) -> float:
    """Batches that left tierserve's queue for the burst pool (counted as each one starts)."""
    text = http.get("/metrics").text
    return metric_value(text, "tierserve_queue_duration_seconds_count", model=MODEL, pool="burst")


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)  # polling interval of a bounded wait


def test_mlserver_runtime_answers_v2_json_like_onnxruntime(setup: Setup) -> None:
    meta = httpx.get(f"{setup.peer.base_url}/v2", timeout=10.0).json()
    assert "binary_tensor_data" not in meta.get("extensions", []), meta  # so tierserve sends JSON
    x = rows(3, seed=1)
    body = {"inputs": [{"name": "X", "datatype": "FP32", "shape": [3, WIDTH], "data": x.ravel().tolist()}]}
    response = httpx.post(f"{setup.peer.base_url}/v2/models/{MODEL}/infer", json=body, timeout=30.0)
    assert response.status_code == 200, response.text
    (output,) = response.json()["outputs"]
    assert (output["name"], output["datatype"], output["shape"]) == ("Y", "FP32", [3, OUTPUTS])
    assert_matches(np.asarray(output["data"], dtype=np.float32).reshape(3, OUTPUTS), setup.expected(x))


def test_requests_go_to_the_cheaper_mlserver_pool_and_match_onnxruntime(
    setup: Setup, http: httpx.Client, triton: httpclient.InferenceServerClient
) -> None:
    before_pools = pool_requests(http)
    before_peer = mlserver_successes(setup.peer)
    before_log = mlserver_infer_log_lines(setup.peer)
    sizes = [1, 2, 3, 1, 4]
    for i, n in enumerate(sizes):  # one at a time: one remote batch each
        x = rows(n, seed=10 + i)
        assert_matches(infer(triton, x), setup.expected(x))
    after_pools = pool_requests(http)
    assert after_pools.get("burst", 0) - before_pools.get("burst", 0) == len(sizes), after_pools
    assert after_pools.get("cpu", 0) == before_pools.get("cpu", 0), after_pools
    assert mlserver_successes(setup.peer) - before_peer == len(sizes)
    assert mlserver_infer_log_lines(setup.peer) - before_log == len(sizes)
    metrics = http.get("/metrics").text
    assert metric_value(metrics, "tierserve_pool_requests_total", model=MODEL, pool="burst") >= len(sizes)


def test_concurrent_requests_batched_for_mlserver_come_back_to_their_callers(
    setup: Setup, http: httpx.Client, triton: httpclient.InferenceServerClient
) -> None:
    before_pools = pool_requests(http)
    before_peer = mlserver_successes(setup.peer)
    xs = [rows(1 + i % 3, seed=100 + i) for i in range(12)]
    pending = []
    for x in xs:
        inputs, outputs = triton_inputs(x)
        pending.append(triton.async_infer(MODEL, inputs, outputs=outputs))
    for x, request in zip(xs, pending, strict=True):
        y = request.get_result(timeout=60).as_numpy("Y")
        assert y is not None
        assert_matches(y, setup.expected(x))
    after_pools = pool_requests(http)
    assert after_pools.get("burst", 0) - before_pools.get("burst", 0) == len(xs), after_pools
    batches = mlserver_successes(setup.peer) - before_peer
    assert 1 <= batches <= len(xs)  # tierserve may have merged queued requests into one JSON batch


def test_when_mlserver_dies_batches_fail_over_to_cpu_and_burst_is_left_alone(
    setup: Setup, http: httpx.Client, triton: httpclient.InferenceServerClient
) -> None:
    # A request that holds MLServer for about a second; kill MLServer while it runs there.
    before_pools = pool_requests(http)
    retried_before = len(RETRY_LINE.findall(setup.front.log_text()))
    started = burst_batches_started(http)
    blocker_x = rows(1, seed=1000, work=BLOCKER_WORK)
    inputs, outputs = triton_inputs(blocker_x)
    blocker = triton.async_infer(MODEL, inputs, outputs=outputs)
    wait_until(lambda: burst_batches_started(http) > started, "the blocker's batch to start on burst")
    setup.peer.kill()  # SIGKILL: the connection drops under the batch
    y = blocker.get_result(timeout=120).as_numpy("Y")
    assert y is not None
    assert_matches(y, setup.expected(blocker_x))
    assert len(RETRY_LINE.findall(setup.front.log_text())) == retried_before + 1, setup.front.log_tail()

    # Everything after it is served by cpu; burst fails at most until its endpoint's breaker opens
    # (3 failures in a row) or its health check marks it down, then it is not tried any more.
    retries: list[int] = []
    for i in range(10):
        x = rows(1 + i % 2, seed=2000 + i)
        before = len(RETRY_LINE.findall(setup.front.log_text()))
        assert_matches(infer(triton, x), setup.expected(x))
        retries.append(len(RETRY_LINE.findall(setup.front.log_text())) - before)
    assert sum(retries[:2]) <= 2 and sum(retries[2:]) == 0, retries
    after_pools = pool_requests(http)
    assert after_pools.get("cpu", 0) - before_pools.get("cpu", 0) == 11, after_pools
    assert after_pools.get("burst", 0) == before_pools.get("burst", 0), after_pools


def build_echo(path: Path) -> None:
    """FP32 ``X [-1, 4] -> Y == X``, at the main model's cost per row: the Sin chain runs on a
    constant of X's batch size (it cannot be folded away) and adds ``r - r == 0`` to X."""
    rng = np.random.default_rng(0)
    w1 = (rng.standard_normal((WIDTH, HIDDEN)) / np.sqrt(WIDTH)).astype(np.float32)
    consts = {
        "zero_i": np.array([0], dtype=np.int64),
        "one_i": np.array([1], dtype=np.int64),
        "width": np.array([WIDTH], dtype=np.int64),
    }
    nodes = [
        helper.make_node("Shape", ["X"], ["x_shape"]),
        helper.make_node("Slice", ["x_shape", "zero_i", "one_i"], ["batch"]),
        helper.make_node("Concat", ["batch", "width"], ["c_shape"], axis=0),
        helper.make_node(
            "ConstantOfShape",
            ["c_shape"],
            ["c"],
            value=numpy_helper.from_array(np.array([0.5], dtype=np.float32)),
        ),
        helper.make_node("MatMul", ["c", "W1"], ["h0"]),
    ]
    nodes += [helper.make_node("Sin", [f"h{i}"], [f"h{i + 1}"]) for i in range(SIN_ROUNDS)]
    nodes += [
        helper.make_node("ReduceSum", [f"h{SIN_ROUNDS}", "one_i"], ["r"], keepdims=1),
        helper.make_node("Sub", ["r", "r"], ["zero"]),
        helper.make_node("Add", ["X", "zero"], ["Y"]),
    ]
    initializers = [numpy_helper.from_array(w1, "W1")]
    initializers += [numpy_helper.from_array(v, k) for k, v in consts.items()]
    graph = helper.make_graph(
        nodes,
        "echo",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["batch", 4])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())


# JSON cannot carry infinities (orjson writes null, MLServer reads NaN): such a batch is refused by
# the JSON-only peer before it is sent, and goes to the local pool without blaming the peer.
def test_infinities_and_nan_survive_a_request_routed_to_mlserver(tmp_path: Path) -> None:
    name = "remote_echo"
    repo = tmp_path / "models"
    model_path = repo / name / "1" / "model.onnx"
    build_echo(model_path)
    (repo / name / "config.yaml").write_text(f"max_batch_size: {MAX_BATCH_SIZE}\n")
    x = np.array([[1.5, np.nan, np.inf, -np.inf]], dtype=np.float32)
    with start_mlserver(model_path, name, tmp_path / "mlserver") as peer:
        config = pools_config(tmp_path / "server.yaml", peer)
        args = ["--config", str(config), "--state-dir", str(tmp_path / "state")]
        with start_server(repo, extra_args=args) as front:
            triton = httpclient.InferenceServerClient(url=front.url, network_timeout=60.0)
            try:
                finite = rows(1, seed=5)[:, :4]
                assert_matches(infer(triton, finite, model=name), finite)  # the echo works at all
                y = infer(triton, x, model=name)
            finally:
                triton.close()
    np.testing.assert_array_equal(y, x)  # NaN equals NaN here; Inf must stay Inf
