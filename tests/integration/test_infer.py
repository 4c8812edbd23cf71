"""Inference: binary, JSON and mixed tensor encodings, every identity datatype, concurrency."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient

from support.models import slow_input
from support.server import RunningServer, start_server
from support.v2 import JSON, assert_json_error, model_stats, outputs_by_name, simple_json_request, simple_rows

pytestmark = pytest.mark.integration


def _simple_inputs(
    a: np.ndarray, b: np.ndarray, *, binary: tuple[bool, bool] = (True, True)
) -> list[httpclient.InferInput]:
    inputs = []
    for name, array, as_binary in (("INPUT0", a, binary[0]), ("INPUT1", b, binary[1])):
        tensor = httpclient.InferInput(name, list(array.shape), "INT32")
        tensor.set_data_from_numpy(array, binary_data=as_binary)
        inputs.append(tensor)
    return inputs


def _outputs(**binary: bool) -> list[httpclient.InferRequestedOutput]:
    return [httpclient.InferRequestedOutput(name, binary_data=flag) for name, flag in binary.items()]


def _output_encodings(result: httpclient.InferResult) -> dict[str, bool]:
    """Output name -> whether the response carried it as binary data."""
    return {
        output["name"]: "binary_data_size" in output.get("parameters", {})
        for output in result.get_response()["outputs"]
    }


# -- simple ------------------------------------------------------------------------------------


def test_simple_binary(client: httpclient.InferenceServerClient) -> None:
    a, b = simple_rows()
    result = client.infer("simple", _simple_inputs(a, b), outputs=_outputs(OUTPUT0=True, OUTPUT1=True))
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)
    assert _output_encodings(result) == {"OUTPUT0": True, "OUTPUT1": True}


def test_simple_default_tritonclient_request(client: httpclient.InferenceServerClient) -> None:
    a, b = simple_rows(seed=1)
    result = client.infer("simple", _simple_inputs(a, b))
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)
    response = result.get_response()
    assert response["model_name"] == "simple"
    assert response["model_version"] == "1"


def test_simple_json(client: httpclient.InferenceServerClient) -> None:
    a, b = simple_rows(seed=2)
    result = client.infer(
        "simple", _simple_inputs(a, b, binary=(False, False)), outputs=_outputs(OUTPUT0=False, OUTPUT1=False)
    )
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)
    assert _output_encodings(result) == {"OUTPUT0": False, "OUTPUT1": False}


@pytest.mark.parametrize(
    ("input_binary", "output_binary"),
    [((True, False), (False, True)), ((False, True), (True, False)), ((False, False), (True, True))],
)
def test_simple_mixed_binary_and_json(
    client: httpclient.InferenceServerClient,
    input_binary: tuple[bool, bool],
    output_binary: tuple[bool, bool],
) -> None:
    a, b = simple_rows(seed=3)
    result = client.infer(
        "simple",
        _simple_inputs(a, b, binary=input_binary),
        outputs=_outputs(OUTPUT0=output_binary[0], OUTPUT1=output_binary[1]),
    )
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)
    assert _output_encodings(result) == {"OUTPUT0": output_binary[0], "OUTPUT1": output_binary[1]}


def test_simple_json_over_raw_http(http: httpx.Client) -> None:
    a, b = simple_rows(seed=4)
    response = http.post("/v2/models/simple/infer", json=simple_json_request(a, b))
    assert response.status_code == 200
    assert response.headers["content-type"] == JSON
    body = response.json()
    assert body["model_name"] == "simple"
    assert body["model_version"] == "1"
    outputs = outputs_by_name(body)
    assert outputs["OUTPUT0"] == {
        "name": "OUTPUT0",
        "datatype": "INT32",
        "shape": [1, 16],
        "data": (a + b).ravel().tolist(),
    }
    assert outputs["OUTPUT1"]["data"] == (a - b).ravel().tolist()


def test_nested_and_flat_json_data_agree(http: httpx.Client) -> None:
    a, b = simple_rows(2, seed=5)
    flat = simple_json_request(a, b)
    nested = simple_json_request(a, b)
    for tensor, array in zip(nested["inputs"], (a, b), strict=True):
        tensor["data"] = array.tolist()  # [[16 values], [16 values]]
    flat_response = http.post("/v2/models/simple/infer", json=flat)
    nested_response = http.post("/v2/models/simple/infer", json=nested)
    assert flat_response.status_code == nested_response.status_code == 200
    assert flat_response.json() == nested_response.json()
    assert outputs_by_name(nested_response.json())["OUTPUT0"]["data"] == (a + b).ravel().tolist()


def test_binary_data_output_parameter_makes_every_output_binary(http: httpx.Client) -> None:
    a, b = simple_rows(seed=6)
    request = simple_json_request(a, b, parameters={"binary_data_output": True})
    response = http.post("/v2/models/simple/infer", json=request)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/octet-stream"
    header_length = int(response.headers["inference-header-content-length"])
    header = httpx.Response(200, content=response.content[:header_length]).json()
    blob = response.content[header_length:]
    sizes = [output["parameters"]["binary_data_size"] for output in header["outputs"]]
    assert sizes == [a.nbytes, a.nbytes]
    assert len(blob) == sum(sizes)
    out0 = np.frombuffer(blob[: sizes[0]], dtype="<i4").reshape(a.shape)
    out1 = np.frombuffer(blob[sizes[0] :], dtype="<i4").reshape(a.shape)
    np.testing.assert_array_equal(out0, a + b)
    np.testing.assert_array_equal(out1, a - b)


def test_request_id_is_echoed(client: httpclient.InferenceServerClient, http: httpx.Client) -> None:
    a, b = simple_rows()
    result = client.infer("simple", _simple_inputs(a, b), request_id="req-42 ✓")
    assert result.get_response()["id"] == "req-42 ✓"
    raw = http.post("/v2/models/simple/infer", json=simple_json_request(a, b, id="raw-7"))
    assert raw.json()["id"] == "raw-7"


def test_response_has_no_id_when_request_has_none(http: httpx.Client) -> None:
    a, b = simple_rows()
    response = http.post("/v2/models/simple/infer", json=simple_json_request(a, b))
    assert "id" not in response.json()


def test_only_requested_outputs_are_returned(client: httpclient.InferenceServerClient) -> None:
    a, b = simple_rows(seed=8)
    result = client.infer("simple", _simple_inputs(a, b), outputs=_outputs(OUTPUT1=True))
    assert [output["name"] for output in result.get_response()["outputs"]] == ["OUTPUT1"]
    assert result.as_numpy("OUTPUT0") is None
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)


def test_only_requested_outputs_are_returned_in_json(http: httpx.Client) -> None:
    a, b = simple_rows(seed=9)
    request = simple_json_request(a, b, outputs=[{"name": "OUTPUT1"}])
    body = http.post("/v2/models/simple/infer", json=request).json()
    assert [output["name"] for output in body["outputs"]] == ["OUTPUT1"]
    assert body["outputs"][0]["data"] == (a - b).ravel().tolist()


def test_batch_of_three_rows(client: httpclient.InferenceServerClient) -> None:
    a, b = simple_rows(3, seed=10)
    result = client.infer("simple", _simple_inputs(a, b))
    assert result.as_numpy("OUTPUT0").shape == (3, 16)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)


def test_batch_of_max_batch_size_rows(client: httpclient.InferenceServerClient) -> None:
    a, b = simple_rows(8, seed=11)
    result = client.infer("simple", _simple_inputs(a, b))
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)


def test_versioned_infer(client: httpclient.InferenceServerClient) -> None:
    a, b = simple_rows(seed=12)
    result = client.infer("simple", _simple_inputs(a, b), model_version="1")
    assert result.get_response()["model_version"] == "1"
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)


# -- identity models: every datatype, both encodings -------------------------------------------

_TEXT = ["plain", "héllo wörld", "日本語テキスト", "emoji 🙂🚀", "", "tab\tand\nnewline"]


def _identity_payload(suffix: str) -> tuple[str, np.ndarray]:
    rng = np.random.default_rng(13)
    payloads: dict[str, tuple[str, np.ndarray]] = {
        "fp32": ("FP32", rng.standard_normal((2, 5)).astype(np.float32)),
        "fp16": ("FP16", np.array([[0.0, -1.5, 65504.0, 6.1e-05, 0.1]], dtype=np.float16)),
        "fp64": ("FP64", np.array([[np.pi, -1e300, 5e-324, 0.1, 123456789.123456789]], dtype=np.float64)),
        "int8": ("INT8", np.array([[-128, -1, 0, 1, 127]], dtype=np.int8)),
        "int32": ("INT32", np.array([[-(2**31), -1, 0, 1, 2**31 - 1]], dtype=np.int32)),
        "int64": ("INT64", np.array([[-(2**63), -1, 0, 2**53 + 1, 2**63 - 1]], dtype=np.int64)),
        "uint8": ("UINT8", np.array([[0, 1, 127, 128, 255]], dtype=np.uint8)),
        "bool": ("BOOL", np.array([[True, False, False], [False, True, True]], dtype=np.bool_)),
        "bytes": ("BYTES", np.array([[s.encode() for s in _TEXT]], dtype=np.object_).reshape(2, 3)),
    }
    return payloads[suffix]


def _as_text(array: np.ndarray) -> list[str]:
    return [item.decode() if isinstance(item, bytes) else str(item) for item in array.ravel()]


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize(
    "suffix", ["fp32", "fp16", "fp64", "int8", "int32", "int64", "uint8", "bool", "bytes"]
)
def test_identity_round_trip(client: httpclient.InferenceServerClient, suffix: str, binary: bool) -> None:
    datatype, array = _identity_payload(suffix)
    tensor = httpclient.InferInput("INPUT0", list(array.shape), datatype)
    tensor.set_data_from_numpy(array, binary_data=binary)
    result = client.infer(
        f"identity_{suffix}",
        [tensor],
        outputs=[httpclient.InferRequestedOutput("OUTPUT0", binary_data=binary)],
    )
    (output,) = result.get_response()["outputs"]
    assert output["datatype"] == datatype
    assert output["shape"] == list(array.shape)
    assert ("binary_data_size" in output.get("parameters", {})) is binary
    returned = result.as_numpy("OUTPUT0")
    assert returned.shape == array.shape
    if datatype == "BYTES":
        assert _as_text(returned) == _as_text(array)
    else:
        assert returned.dtype == array.dtype
        np.testing.assert_array_equal(returned, array)


def test_bytes_json_keeps_non_ascii_text(http: httpx.Client) -> None:
    request = {"inputs": [{"name": "INPUT0", "datatype": "BYTES", "shape": [2, 3], "data": _TEXT}]}
    response = http.post("/v2/models/identity_bytes/infer", json=request)
    assert response.status_code == 200
    (output,) = response.json()["outputs"]
    assert output["data"] == _TEXT


def test_bytes_binary_keeps_empty_and_multibyte_elements(client: httpclient.InferenceServerClient) -> None:
    array = np.array([[b"", "ünï 🙂".encode(), b"\x00nul"]], dtype=np.object_)
    tensor = httpclient.InferInput("INPUT0", [1, 3], "BYTES")
    tensor.set_data_from_numpy(array)
    result = client.infer("identity_bytes", [tensor])
    assert result.as_numpy("OUTPUT0").ravel().tolist() == array.ravel().tolist()


def test_non_utf8_bytes_for_a_string_model_are_not_a_server_error(
    client: httpclient.InferenceServerClient, http: httpx.Client
) -> None:
    array = np.array([[b"\xff\xfe not utf-8", b"ok"]], dtype=np.object_)
    tensor = httpclient.InferInput("INPUT0", [1, 2], "BYTES")
    tensor.set_data_from_numpy(array)
    body, header_length = httpclient.InferenceServerClient.generate_request_body([tensor])
    response = http.post(
        "/v2/models/identity_bytes/infer",
        content=body,
        headers={"Inference-Header-Content-Length": str(header_length)},
    )
    assert response.status_code < 500, response.text
    if response.status_code == 200:
        assert client.infer("identity_bytes", [tensor]).as_numpy("OUTPUT0").ravel().tolist() == [
            b"\xff\xfe not utf-8",
            b"ok",
        ]
    else:
        assert_json_error(response, response.status_code)


# -- concurrency and batching ------------------------------------------------------------------

_THREADS = 32


def _infer_simple_on_own_client(url: str, seed: int) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    rows = 1 + seed % 3
    a, b = simple_rows(rows, seed=100 + seed)
    own = httpclient.InferenceServerClient(url=url, network_timeout=30.0)
    try:
        result = own.infer("simple", _simple_inputs(a, b), request_id=f"c{seed}")
        outputs = {name: result.as_numpy(name) for name in ("OUTPUT0", "OUTPUT1")}
        return a, b, {"id": result.get_response()["id"], **outputs}
    finally:
        own.close()


def test_concurrent_clients_get_correct_results(server: RunningServer, http: httpx.Client) -> None:
    before = model_stats(http, "simple")
    with ThreadPoolExecutor(max_workers=_THREADS) as pool:
        results = list(pool.map(lambda i: _infer_simple_on_own_client(server.url, i), range(_THREADS)))
    for i, (a, b, got) in enumerate(results):
        assert got["id"] == f"c{i}"
        np.testing.assert_array_equal(got["OUTPUT0"], a + b)
        np.testing.assert_array_equal(got["OUTPUT1"], a - b)
    after = model_stats(http, "simple")
    rows = sum(a.shape[0] for a, _, _ in results)
    # Other tests share this server, but they run one at a time: the deltas are this test's alone.
    assert after["inference_count"] - before["inference_count"] == rows
    executions = after["execution_count"] - before["execution_count"]
    assert 1 <= executions <= _THREADS
    successes = after["inference_stats"]["success"]["count"] - before["inference_stats"]["success"]["count"]
    assert successes == _THREADS


@pytest.fixture(scope="module")
def slow_server(slow_repo: Path) -> Iterator[RunningServer]:
    with start_server(slow_repo) as running:
        yield running


def _infer_slow(url: str, index: int) -> np.ndarray:
    x = slow_input(index)
    tensor = httpclient.InferInput("X", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    own = httpclient.InferenceServerClient(url=url, network_timeout=60.0)
    try:
        y = own.infer("slow", [tensor]).as_numpy("Y")
    finally:
        own.close()
    np.testing.assert_array_equal(y, x)
    return y


def test_concurrent_requests_to_a_slow_model_are_batched(slow_server: RunningServer) -> None:
    """While one batch runs (hundreds of ms), the other requests queue up and run together."""
    requests = 6
    with ThreadPoolExecutor(max_workers=requests) as pool:
        outputs = list(pool.map(lambda i: _infer_slow(slow_server.url, i), range(requests)))
    assert [float(y[0, 1]) for y in outputs] == [float(i) for i in range(requests)]
    with httpx.Client(base_url=slow_server.base_url, timeout=30.0) as http:
        stats = model_stats(http, "slow")
    assert stats["inference_count"] == requests
    assert stats["execution_count"] < stats["inference_count"]
    assert sum(batch["batch_size"] * batch["compute_infer"]["count"] for batch in stats["batch_stats"]) == (
        requests
    )
