"""Triton's extensions: model configuration, statistics, model repository; and /metrics."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from support.server import RunningServer, ServerStartError, start_server
from support.v2 import (
    EXAMPLE_MODELS,
    JSON,
    UNKNOWN_MODEL_PREFIX,
    assert_json_error,
    assert_serves_simple,
    metric_samples,
    metric_value,
    simple_json_request,
    simple_rows,
)

pytestmark = pytest.mark.integration


def _simple_inputs(rows: int = 1, seed: int = 0) -> tuple[list[httpclient.InferInput], np.ndarray]:
    a, b = simple_rows(rows, seed=seed)
    inputs = []
    for name, array in (("INPUT0", a), ("INPUT1", b)):
        tensor = httpclient.InferInput(name, list(array.shape), "INT32")
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs, a + b


def _stats(client: httpclient.InferenceServerClient, model: str, version: str = "") -> dict[str, Any]:
    (stats,) = client.get_inference_statistics(model, model_version=version)["model_stats"]
    return stats


# -- model configuration -----------------------------------------------------------------------


def test_simple_config(http: httpx.Client) -> None:
    response = http.get("/v2/models/simple/config")
    assert response.status_code == 200
    assert response.headers["content-type"] == JSON
    config = response.json()
    assert config["name"] == "simple"
    assert config["max_batch_size"] == 8
    expected = [{"name": n, "data_type": "TYPE_INT32", "dims": [16]} for n in ("INPUT0", "INPUT1")]
    assert config["input"] == expected
    assert [(t["name"], t["data_type"], t["dims"]) for t in config["output"]] == [
        ("OUTPUT0", "TYPE_INT32", [16]),
        ("OUTPUT1", "TYPE_INT32", [16]),
    ]


def test_config_through_tritonclient_with_version(client: httpclient.InferenceServerClient) -> None:
    config = client.get_model_config("simple", model_version="1")
    assert config["max_batch_size"] == 8
    assert all(tensor["dims"] == [16] for tensor in config["input"] + config["output"])


def test_identity_config_uses_default_batching_and_triton_type_names(
    client: httpclient.InferenceServerClient,
) -> None:
    config = client.get_model_config("identity_bytes")
    assert config["max_batch_size"] > 0  # dynamic first dimension: the model batches
    assert config["input"] == [{"name": "INPUT0", "data_type": "TYPE_STRING", "dims": [-1]}]
    assert config["output"] == [{"name": "OUTPUT0", "data_type": "TYPE_STRING", "dims": [-1]}]
    assert client.get_model_config("identity_fp16")["input"][0]["data_type"] == "TYPE_FP16"


# -- statistics --------------------------------------------------------------------------------


def test_all_model_stats_lists_every_loaded_model(http: httpx.Client) -> None:
    response = http.get("/v2/models/stats")
    assert response.status_code == 200
    assert response.headers["content-type"] == JSON
    rows = response.json()["model_stats"]
    assert sorted(row["name"] for row in rows) == EXAMPLE_MODELS
    assert all(row["version"] == "1" for row in rows)


def test_stats_grow_after_inference(client: httpclient.InferenceServerClient) -> None:
    before = _stats(client, "simple")
    inputs, expected = _simple_inputs(rows=3, seed=20)
    np.testing.assert_array_equal(client.infer("simple", inputs).as_numpy("OUTPUT0"), expected)
    after = _stats(client, "simple")
    assert after["inference_count"] == before["inference_count"] + 3
    assert after["execution_count"] == before["execution_count"] + 1
    success_before = before["inference_stats"]["success"]
    success_after = after["inference_stats"]["success"]
    assert success_after["count"] == success_before["count"] + 1
    assert success_after["ns"] > success_before["ns"]
    compute = after["inference_stats"]["compute_infer"]["count"]
    assert compute == before["inference_stats"]["compute_infer"]["count"] + 1
    assert after["last_inference"] >= before["last_inference"]
    assert after["last_inference"] > 0
    assert any(batch["batch_size"] == 3 for batch in after["batch_stats"])


def test_stats_per_version_match_per_model(client: httpclient.InferenceServerClient) -> None:
    inputs, _ = _simple_inputs(seed=21)
    client.infer("identity_int32", [_identity_int32()])
    client.infer("simple", inputs)
    per_model = _stats(client, "identity_int32")
    per_version = _stats(client, "identity_int32", version="1")
    assert per_version["name"] == "identity_int32"
    assert per_version["version"] == "1"
    assert per_version["inference_count"] == per_model["inference_count"] >= 1


def test_all_model_stats_count_what_the_per_model_stats_count(
    client: httpclient.InferenceServerClient,
) -> None:
    client.infer("identity_int32", [_identity_int32()])
    everything = {row["name"]: row for row in client.get_inference_statistics()["model_stats"]}
    assert (
        everything["identity_int32"]["inference_count"] == _stats(client, "identity_int32")["inference_count"]
    )


def test_failed_request_counts_as_failure(http: httpx.Client) -> None:
    def fail_count() -> int:
        (stats,) = http.get("/v2/models/simple/stats").json()["model_stats"]
        return int(stats["inference_stats"]["fail"]["count"])

    before = fail_count()
    a, b = simple_rows()
    request = simple_json_request(a, b)
    request["inputs"][0]["datatype"] = "INT64"
    assert_json_error(http.post("/v2/models/simple/infer", json=request), 400)
    assert fail_count() == before + 1


def _identity_int32() -> httpclient.InferInput:
    tensor = httpclient.InferInput("INPUT0", [1, 2], "INT32")
    tensor.set_data_from_numpy(np.array([[1, 2]], dtype=np.int32))
    return tensor


# -- model repository (read-only on the shared server) ------------------------------------------


def test_repository_index_lists_every_model_ready(client: httpclient.InferenceServerClient) -> None:
    index = client.get_model_repository_index()
    assert sorted(row["name"] for row in index) == EXAMPLE_MODELS
    assert all(row["state"] == "READY" and row["version"] == "1" for row in index)


@pytest.mark.parametrize("body", [None, {}, {"ready": True}])
def test_repository_index_over_raw_http(http: httpx.Client, body: dict[str, bool] | None) -> None:
    response = http.post("/v2/repository/index", json=body)  # None: an empty body
    assert response.status_code == 200
    assert response.headers["content-type"] == JSON
    assert sorted(row["name"] for row in response.json()) == EXAMPLE_MODELS


def test_unload_unknown_model_is_404(http: httpx.Client) -> None:
    message = assert_json_error(http.post("/v2/repository/models/no_such_model/unload"), 404)
    assert message.startswith(UNKNOWN_MODEL_PREFIX)


def test_load_unknown_model_is_404(http: httpx.Client) -> None:
    message = assert_json_error(http.post("/v2/repository/models/no_such_model/load"), 404)
    assert message.startswith(UNKNOWN_MODEL_PREFIX)


def test_tritonclient_unload_unknown_model_raises(client: httpclient.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException, match=UNKNOWN_MODEL_PREFIX):
        client.unload_model("no_such_model")


# -- model repository: load and unload (a server of their own) ----------------------------------


@pytest.fixture(scope="module")
def admin_server(example_repo: Path) -> Iterator[RunningServer]:
    """A server whose models these tests unload and load, so that the shared one stays intact."""
    with start_server(example_repo) as running:
        yield running


@pytest.fixture
def admin(admin_server: RunningServer) -> Iterator[httpclient.InferenceServerClient]:
    triton = httpclient.InferenceServerClient(url=admin_server.url, network_timeout=60.0)
    try:
        yield triton
    finally:
        triton.close()


@pytest.fixture
def admin_http(admin_server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=admin_server.base_url, timeout=60.0) as raw:
        yield raw


def test_unload_then_load(admin: httpclient.InferenceServerClient, admin_http: httpx.Client) -> None:
    admin.unload_model("simple")
    try:
        assert not admin.is_model_ready("simple")
        ready = admin_http.get("/v2/models/simple/ready")
        assert ready.status_code != 200
        assert ready.headers["content-type"] == JSON
        a, b = simple_rows()
        message = assert_json_error(
            admin_http.post("/v2/models/simple/infer", json=simple_json_request(a, b)), 404
        )
        assert message.startswith(UNKNOWN_MODEL_PREFIX)
        row = next(r for r in admin.get_model_repository_index() if r["name"] == "simple")
        assert row["state"] == "UNAVAILABLE"
        assert admin.is_server_ready()  # an unloaded model does not make the server unready
    finally:
        admin.load_model("simple")
    assert admin.is_model_ready("simple")
    assert_serves_simple(admin_http)
    row = next(r for r in admin.get_model_repository_index() if r["name"] == "simple")
    assert row["state"] == "READY"


def test_unload_twice_is_harmless(admin: httpclient.InferenceServerClient, admin_http: httpx.Client) -> None:
    admin.unload_model("identity_fp64")
    admin.unload_model("identity_fp64")
    admin.load_model("identity_fp64")
    assert admin.is_model_ready("identity_fp64")


def test_unloaded_model_leaves_stats_and_metrics(
    admin: httpclient.InferenceServerClient, admin_http: httpx.Client
) -> None:
    admin.infer("identity_int32", [_identity_int32()])
    admin.unload_model("identity_int32")
    try:
        message = assert_json_error(admin_http.get("/v2/models/identity_int32/stats"), 404)
        assert message.startswith(UNKNOWN_MODEL_PREFIX)
        samples = metric_samples(admin_http.get("/metrics").text)
        assert not [
            labels
            for name, labels, _ in samples
            if name == "tierserve_requests_total" and labels.get("model") == "identity_int32"
        ]
    finally:
        admin.load_model("identity_int32")
    # Statistics are kept across an unload/load (Triton's counters are cumulative too).
    assert _stats(admin, "identity_int32")["inference_count"] >= 1


def test_load_of_a_loaded_model_keeps_serving(
    admin: httpclient.InferenceServerClient, admin_http: httpx.Client
) -> None:
    admin.load_model("simple")
    assert admin.is_model_ready("simple")
    assert_serves_simple(admin_http)


def _thread_count(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no Threads line in /proc/<pid>/status")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_reloading_a_loaded_model_releases_the_previous_instance(
    admin_server: RunningServer, admin: httpclient.InferenceServerClient
) -> None:
    admin.load_model("identity_uint8")  # the first reload may start a worker thread for the API
    before = _thread_count(admin_server.pid)
    reloads = 5
    for _ in range(reloads):
        admin.load_model("identity_uint8")
    assert admin.is_model_ready("identity_uint8")
    grown = _thread_count(admin_server.pid) - before
    assert grown < reloads, f"{grown} more threads after {reloads} reloads"


# -- metrics -----------------------------------------------------------------------------------

METRIC_NAMES = [
    "tierserve_requests_total",
    "tierserve_request_duration_seconds",
    "tierserve_batch_size",
    "tierserve_queue_depth",
    "tierserve_inference_duration_seconds",
]


def test_metrics_is_prometheus_text(http: httpx.Client) -> None:
    assert_serves_simple(http)
    response = http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    samples = metric_samples(text)  # every non-comment line parses as a sample
    names = {name for name, _, _ in samples}
    for metric in METRIC_NAMES:
        family = metric.removesuffix("_total")
        assert f"# TYPE {family} " in text or f"# TYPE {metric} " in text, metric
        assert any(name == metric or name.startswith(metric + "_") for name in names), metric


def test_metrics_count_requests(http: httpx.Client) -> None:
    def successes() -> float:
        return metric_value(
            http.get("/metrics").text, "tierserve_requests_total", model="simple", outcome="success"
        )

    before = successes()
    assert_serves_simple(http)
    assert_serves_simple(http, seed=8)
    assert successes() == before + 2
    text = http.get("/metrics").text
    assert metric_value(text, "tierserve_batch_size_count", model="simple") >= 2
    assert metric_value(text, "tierserve_inference_duration_seconds_count", model="simple") >= 2
    assert metric_value(text, "tierserve_request_duration_seconds_count", model="simple") >= 2


def test_a_model_with_a_broken_config_makes_the_server_not_ready(tmp_path: Path) -> None:
    from support.models import build_mlp_model

    build_mlp_model(tmp_path / "good" / "1" / "model.onnx", width=8)
    build_mlp_model(tmp_path / "broken" / "1" / "model.onnx", width=8)
    (tmp_path / "broken" / "config.yaml").write_text("max_batch_size: [not, a, number]\n")
    with pytest.raises(ServerStartError):  # never ready: Triton's strict readiness
        start_server(tmp_path, ready_timeout=6).stop()  # stop: no leaked server if it ever gets ready
