"""The result cache between two real servers sharing a real Redis (scripts/redis.sh), with keys
for two tenants: a hit on B after a miss on A, tenant isolation, a version swap on A invalidating B,
approximate (int8) answers only for tiers that accept them, single flight, errors and oversized
answers never stored, and Redis going away mid-run costing clients nothing."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as httpclient
from onnx import TensorProto, helper, numpy_helper

from security import redis_server
from security.servers import FAST_REFRESH_ENV, Key, make_key, wait_for
from support.models import build_mlp_model, slow_input, write_slow_repository
from support.scripted import SCRIPTS
from support.server import RunningServer, start_server
from support.v2 import metric_value, model_stats, simple_json_request, simple_rows

pytestmark = pytest.mark.integration

MLP_WIDTH = 64
SERVER_CONFIG = (
    "tiers:\n"  # generous targets: these tests are about answers, not deadlines on a busy machine
    "  - {name: gold, target_ms: 10000, priority: 0, miss_policy: reject}\n"
    "  - {name: bronze, target_ms: 20000, priority: 2, miss_policy: best_effort, approximate: true}\n"
    "pools:\n"
    "  - {name: cpu, kind: onnx-cpu, cost_per_1k_requests: 3}\n"
    "  - {name: cpu-int8, kind: onnx-cpu-int8, cost_per_1k_requests: 1, accuracy_threshold: 0.9,\n"
    "     models: [mlp]}\n"
)


def build_add_model(path: Path, constant: float) -> None:
    """FP32 ``X [-1, 4] -> Y = X + constant``: two builds with different constants are two "weights"
    of one version."""
    c = numpy_helper.from_array(np.full((4,), constant, dtype=np.float32), "C")
    graph = helper.make_graph(
        [helper.make_node("Add", ["X", "C"], ["Y"])],
        "addc",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["batch", 4])],
        [c],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())


def write_repository(root: Path, example_repo: Path) -> Path:
    def copy_simple(name: str, cache: str) -> None:
        shutil.copytree(example_repo / "simple", root / name)
        with (root / name / "config.yaml").open("a") as config:
            config.write(f"cache: {cache}\n")

    copy_simple("simple", "true")
    copy_simple("simple_shared", "{shared: true}")
    copy_simple("simple_small", "{max_bytes: 64}")  # its answers (2 x 64 bytes) are too large
    shutil.copytree(example_repo / "simple", root / "simple_triton")  # opted in by config.pbtxt alone
    (root / "simple_triton" / "config.yaml").unlink()
    (root / "simple_triton" / "config.pbtxt").write_text(
        'name: "simple_triton"\nplatform: "onnxruntime_onnx"\nmax_batch_size: 8\n'
        "response_cache { enable: true }\n"
    )
    build_add_model(root / "addc" / "1" / "model.onnx", 1.0)
    (root / "addc" / "config.yaml").write_text("max_batch_size: 8\ncache: true\n")
    build_mlp_model(root / "mlp" / "1" / "model.onnx", width=MLP_WIDTH)
    (root / "mlp" / "config.yaml").write_text("max_batch_size: 8\ncache: true\n")
    write_slow_repository(root, max_batch_size=16, extra_config="cache: true\n")
    return root


@dataclass
class Pair:
    a: RunningServer
    b: RunningServer
    repos: dict[str, Path]
    acme: Key
    globex: Key
    admin: Key


@pytest.fixture(scope="module")
def pair(example_repo: Path) -> Iterator[Pair]:
    url = redis_server.server().url
    work = Path(tempfile.mkdtemp(prefix="tierserve-cache-"))
    try:
        config = work / "server.yaml"
        config.write_text(SERVER_CONFIG)
        database = f"sqlite:///{work}/jobs-a.db"
        acme = make_key("acme", "user", database=database)
        globex = make_key("globex", "user", database=database)
        admin = make_key("ops", "admin", database=database)
        servers, repos = [], {}
        for name in ("a", "b"):
            repos[name] = write_repository(work / f"repo-{name}", example_repo)
            args = [
                "--database", f"sqlite:///{work}/jobs-{name}.db", "--redis", url, "--config", str(config),
                "--state-dir", str(work / f"state-{name}"),
            ]  # fmt: skip
            servers.append(start_server(repos[name], env=FAST_REFRESH_ENV, extra_args=args))
        with servers[0] as a, servers[1] as b:
            yield Pair(a, b, repos, acme, globex, admin)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def infer(server: RunningServer, model: str, body: dict[str, Any], key: Key) -> dict[str, Any]:
    response = httpx.post(
        f"{server.base_url}/v2/models/{model}/infer", json=body, headers=key.headers, timeout=60
    )
    assert response.status_code == 200, response.text
    doc: dict[str, Any] = response.json()
    return doc


def stats(server: RunningServer, model: str, key: Key) -> dict[str, Any]:
    with httpx.Client(base_url=server.base_url, headers=key.headers, timeout=30) as http:
        return model_stats(http, model)


def counts(server: RunningServer, model: str, key: Key) -> tuple[int, int, int]:
    """(cache hits, cache misses, rows inferred) of ``model`` on ``server``."""
    doc = stats(server, model, key)
    inference = doc["inference_stats"]
    return inference["cache_hit"]["count"], inference["cache_miss"]["count"], doc["inference_count"]


def delta(after: tuple[int, ...], before: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(x - y for x, y in zip(after, before, strict=True))


def metrics(server: RunningServer, key: Key) -> str:
    return httpx.get(f"{server.base_url}/metrics", headers=key.headers, timeout=30).text


def simple_body(seed: int, **extra: Any) -> dict[str, Any]:
    return simple_json_request(*simple_rows(1, seed=seed), **extra)


def x_body(x: np.ndarray, tier: str = "gold") -> dict[str, Any]:
    return {
        "inputs": [{"name": "X", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}],
        "parameters": {"tier": tier},
    }


def output(doc: dict[str, Any]) -> np.ndarray:
    (out,) = doc["outputs"]
    return np.asarray(out["data"], dtype=np.float32).reshape(out["shape"])


def test_a_miss_on_a_is_a_hit_on_b_then_a_local_hit_there(pair: Pair) -> None:
    a_before, b_before = counts(pair.a, "simple", pair.admin), counts(pair.b, "simple", pair.admin)
    tier_before = stats(pair.b, "simple", pair.admin)["tier_stats"].get("bronze", {}).get("met", {"count": 0})
    first = infer(pair.a, "simple", simple_body(101), pair.acme)
    assert delta(counts(pair.a, "simple", pair.admin), a_before) == (0, 1, 1)

    # B answers from Redis, through tritonclient's binary encoding: no inference there.
    a, b = simple_rows(1, seed=101)
    client = httpclient.InferenceServerClient(pair.b.url, network_timeout=30)
    try:
        inputs = [
            httpclient.InferInput("INPUT0", [1, 16], "INT32"),
            httpclient.InferInput("INPUT1", [1, 16], "INT32"),
        ]
        inputs[0].set_data_from_numpy(a)
        inputs[1].set_data_from_numpy(b)
        result = client.infer("simple", inputs, headers=pair.acme.headers)
    finally:
        client.close()
    assert (
        result.as_numpy("OUTPUT0").ravel().tolist() == first["outputs"][0]["data"] == (a + b).ravel().tolist()
    )
    assert np.array_equal(result.as_numpy("OUTPUT1"), a - b)
    assert delta(counts(pair.b, "simple", pair.admin), b_before) == (1, 0, 0)

    again = infer(pair.b, "simple", simple_body(101), pair.acme)  # promoted: now in B's own layer
    assert again["outputs"] == first["outputs"]
    assert delta(counts(pair.b, "simple", pair.admin), b_before) == (2, 0, 0)
    text = metrics(pair.b, pair.admin)
    assert (
        metric_value(text, "tierserve_cache_lookups_total", model="simple", layer="redis", result="hit") >= 1
    )
    assert (
        metric_value(text, "tierserve_cache_lookups_total", model="simple", layer="local", result="hit") >= 1
    )
    assert metric_value(text, "tierserve_cache_hit_duration_seconds_count", model="simple") >= 2
    assert metric_value(text, "tierserve_cache_bytes", layer="local") > 0
    # Hits count as served requests of their tier.
    tier_after = stats(pair.b, "simple", pair.admin)["tier_stats"]["bronze"]["met"]
    assert tier_after["count"] - tier_before["count"] == 2


def test_answers_never_cross_tenants_unless_the_model_is_shared(pair: Pair) -> None:
    before = counts(pair.b, "simple", pair.admin)
    infer(pair.a, "simple", simple_body(202), pair.acme)
    infer(pair.b, "simple", simple_body(202), pair.globex)  # same request, another tenant: a miss
    assert delta(counts(pair.b, "simple", pair.admin), before) == (0, 1, 1)
    infer(pair.b, "simple", simple_body(202), pair.globex)  # globex's own answer, now cached
    assert delta(counts(pair.b, "simple", pair.admin), before) == (1, 1, 1)

    before = counts(pair.b, "simple_shared", pair.admin)
    infer(pair.a, "simple_shared", simple_body(202), pair.acme)
    infer(pair.b, "simple_shared", simple_body(202), pair.globex)
    assert delta(counts(pair.b, "simple_shared", pair.admin), before) == (1, 0, 0)


def generation(server: RunningServer, key: Key, model: str) -> float:
    return metric_value(metrics(server, key), "tierserve_cache_generation", model=model, version="1")


def test_a_version_swap_on_a_makes_the_old_answers_unreachable_on_b(pair: Pair) -> None:
    x = np.array([[1.0, 2.0, 3.0, 4.0]], dtype=np.float32)
    assert output(infer(pair.a, "addc", x_body(x), pair.acme)).tolist() == (x + 1).tolist()
    before = counts(pair.b, "addc", pair.admin)
    assert output(infer(pair.b, "addc", x_body(x), pair.acme)).tolist() == (x + 1).tolist()
    assert delta(counts(pair.b, "addc", pair.admin), before) == (1, 0, 0)

    build_add_model(pair.repos["a"] / "addc" / "1" / "model.onnx", 2.0)  # new weights, same version
    loaded = httpx.post(
        f"{pair.a.base_url}/v2/repository/models/addc/load", json={}, headers=pair.admin.headers, timeout=60
    )
    assert loaded.status_code == 200, loaded.text
    # A: the new weights' answer at once, never the cached one.
    assert output(infer(pair.a, "addc", x_body(x), pair.acme)).tolist() == (x + 2).tolist()

    # B learns the new generation through Redis (pushed, so promptly); its old entry is gone.
    new = generation(pair.a, pair.admin, "addc")
    wait_for(lambda: generation(pair.b, pair.admin, "addc") == new, 30, "B to see A's generation")
    before = counts(pair.b, "addc", pair.admin)
    assert output(infer(pair.b, "addc", x_body(x), pair.acme)).tolist() == (x + 1).tolist()  # B's weights
    assert delta(counts(pair.b, "addc", pair.admin), before) == (0, 1, 1)


def test_int8_answers_go_only_to_tiers_that_accept_approximate_results(pair: Pair) -> None:
    x = np.random.default_rng(5).standard_normal((1, MLP_WIDTH)).astype(np.float32)
    session = ort.InferenceSession(
        str(pair.repos["a"] / "mlp" / "1" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    exact = session.run(None, {"X": x})[0]

    before = counts(pair.a, "mlp", pair.admin)
    approximate = output(infer(pair.a, "mlp", x_body(x, "bronze"), pair.acme))
    assert stats(pair.a, "mlp", pair.admin)["pool_stats"]["cpu-int8"]["requests"] >= 1
    assert not np.allclose(approximate, exact, atol=1e-6), "int8 and fp32 agree exactly: nothing to test"
    # Gold does not accept approximate answers: a miss, served exactly by the fp32 pool.
    gold = output(infer(pair.a, "mlp", x_body(x, "gold"), pair.acme))
    np.testing.assert_allclose(gold, exact, rtol=1e-5, atol=1e-5)
    assert delta(counts(pair.a, "mlp", pair.admin), before) == (0, 2, 2)
    # Now both classes are cached. On B: gold gets the exact one; bronze may get either.
    before = counts(pair.b, "mlp", pair.admin)
    np.testing.assert_array_equal(output(infer(pair.b, "mlp", x_body(x, "gold"), pair.acme)), gold)
    infer(pair.b, "mlp", x_body(x, "bronze"), pair.acme)
    assert delta(counts(pair.b, "mlp", pair.admin), before) == (2, 0, 0)


def test_concurrent_identical_misses_run_the_model_once(pair: Pair) -> None:
    body = x_body(slow_input(7.0, work=20.0))
    before = stats(pair.a, "slow", pair.admin)
    results: list[httpx.Response] = []
    lock = threading.Lock()

    def call() -> None:
        response = httpx.post(
            f"{pair.a.base_url}/v2/models/slow/infer", json=body, headers=pair.acme.headers, timeout=120
        )
        with lock:
            results.append(response)

    threads = [threading.Thread(target=call) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [r.status_code for r in results] == [200] * 10, [r.text for r in results if r.status_code != 200]
    assert len({r.text for r in results}) == 1
    after = stats(pair.a, "slow", pair.admin)
    # Ten callers, one batch of one row: the others joined the flight or hit its stored answer.
    assert after["execution_count"] - before["execution_count"] == 1
    assert after["inference_count"] - before["inference_count"] == 1


def test_errors_are_never_cached(pair: Pair) -> None:
    body = x_body(slow_input(8.0, work=5.0))
    late = {**body, "parameters": {"tier": "gold", "timeout": 1}}  # a 1 µs deadline: refused at once
    refused = httpx.post(
        f"{pair.a.base_url}/v2/models/slow/infer", json=late, headers=pair.acme.headers, timeout=60
    )
    assert refused.status_code == 503, refused.text
    before = counts(pair.a, "slow", pair.admin)
    infer(pair.a, "slow", body, pair.acme)  # same key ("timeout" does not change answers): computed
    assert delta(counts(pair.a, "slow", pair.admin), before) == (0, 1, 1)


def test_answers_over_max_bytes_are_served_but_not_stored(pair: Pair) -> None:
    before = counts(pair.a, "simple_small", pair.admin)
    first = infer(pair.a, "simple_small", simple_body(303), pair.acme)
    second = infer(pair.a, "simple_small", simple_body(303), pair.acme)
    assert first["outputs"] == second["outputs"]
    assert delta(counts(pair.a, "simple_small", pair.admin), before) == (0, 2, 2)
    text = metrics(pair.a, pair.admin)
    assert metric_value(text, "tierserve_cache_bypassed_total", model="simple_small", reason="too_large") >= 2


def test_classification_is_applied_to_each_request_not_to_the_cached_answer(pair: Pair) -> None:
    classified = simple_body(505, outputs=[{"name": "OUTPUT0", "parameters": {"classification": 2}}])
    first = infer(pair.a, "simple", classified, pair.acme)["outputs"][0]
    assert first["datatype"] == "BYTES" and len(first["data"]) == 2
    a, b = simple_rows(1, seed=505)
    raw = infer(pair.a, "simple", simple_body(505, outputs=[{"name": "OUTPUT0"}]), pair.acme)  # a hit
    assert raw["outputs"][0]["data"] == (a + b).ravel().tolist()

    # The same through single flight: a classifying leader and a plain follower of one slow miss,
    # in that order (the follower is sent once the server has counted the leader's miss: its
    # flight is registered by then; should the leader be done already, the follower hits its entry).
    x = slow_input(9.0, work=30.0)
    plain = {**x_body(x), "outputs": [{"name": "Y"}]}  # the same key as the leader's
    leader = {**plain, "outputs": [{"name": "Y", "parameters": {"classification": 1}}]}
    results: dict[str, dict[str, Any]] = {}

    def call(name: str, body: dict[str, Any]) -> None:
        results[name] = infer(pair.a, "slow", body, pair.acme)

    misses = counts(pair.a, "slow", pair.admin)[1]
    first_thread = threading.Thread(target=call, args=("leader", leader))
    first_thread.start()
    wait_for(lambda: counts(pair.a, "slow", pair.admin)[1] > misses, 30, "the leader's miss")
    call("plain", plain)
    first_thread.join()
    assert results["leader"]["outputs"][0]["datatype"] == "BYTES"
    assert output(results["plain"]).tolist() == x.tolist()


def test_tritons_response_cache_setting_turns_the_cache_on(pair: Pair) -> None:
    before = counts(pair.a, "simple_triton", pair.admin)
    first = infer(pair.a, "simple_triton", simple_body(404), pair.acme)
    assert infer(pair.a, "simple_triton", simple_body(404), pair.acme)["outputs"] == first["outputs"]
    assert delta(counts(pair.a, "simple_triton", pair.admin), before) == (1, 1, 1)


def test_redis_going_away_costs_clients_nothing(tmp_path: Path, example_repo: Path) -> None:
    if redis_server.skip_reason():
        pytest.skip(redis_server.skip_reason() or "")
    started = subprocess.run(
        ["bash", str(SCRIPTS / "redis.sh"), "start"], capture_output=True, text=True, timeout=60, check=True
    )
    values = dict(line.split("=", 1) for line in started.stdout.splitlines() if "=" in line)
    repo = tmp_path / "models"
    shutil.copytree(example_repo / "simple", repo / "simple")
    with (repo / "simple" / "config.yaml").open("a") as config:
        config.write("cache: true\n")
    try:
        args = ["--cache-redis", values["URL"], "--state-dir", str(tmp_path / "state")]
        with (
            start_server(repo, extra_args=args) as server,
            httpx.Client(base_url=server.base_url, timeout=30) as http,
        ):
            assert http.post("/v2/models/simple/infer", json=simple_body(1)).status_code == 200
            subprocess.run(["bash", str(SCRIPTS / "redis.sh"), "stop", values["DIR"]], check=True, timeout=60)
            for seed in (1, 2, 3, 2):  # a local hit, two misses without Redis, a local hit again
                response = http.post("/v2/models/simple/infer", json=simple_body(seed))
                assert response.status_code == 200, response.text
                a, b = simple_rows(1, seed=seed)
                assert response.json()["outputs"][0]["data"] == (a + b).ravel().tolist()
            hits, misses = (
                model_stats(http, "simple")["inference_stats"][k]["count"]
                for k in ("cache_hit", "cache_miss")
            )
            assert (hits, misses) == (2, 3)
            text = http.get("/metrics").text
            assert (
                metric_value(text, "tierserve_cache_bypassed_total", model="simple", reason="redis_down") >= 1
            )
            # A load while Redis is away still works (the generation moves on locally).
            assert http.post("/v2/repository/models/simple/load", json={}).status_code == 200
            assert http.post("/v2/models/simple/infer", json=simple_body(2)).status_code == 200
            assert server.log_text().count("is unreachable") == 1
    finally:
        subprocess.run(
            ["bash", str(SCRIPTS / "redis.sh"), "stop", values["DIR"]],
            capture_output=True,
            timeout=60,
            check=False,
        )
