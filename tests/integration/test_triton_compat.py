"""What Triton users' code sends, through ``tritonclient.http`` unchanged: ``timeout=0``, raw binary
requests, compressed bodies, classification, NaN and infinities in JSON, system shared memory (the
calls of tritonclient's ``simple_http_shm_client.py`` and ``simple_http_shm_string_client.py``),
and the limits Triton enforces.

Where tritonclient cannot send something (a raw binary body, a zip bomb, deep JSON), httpx sends it
and tritonclient still reads the answer.
"""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
from tritonclient import utils
from tritonclient.utils import InferenceServerException

from support.server import RunningServer, tierserve_command
from support.v2 import assert_json_error, simple_json_request, simple_rows

pytestmark = pytest.mark.integration

HAS_POSIX_SHM = Path("/dev/shm").is_dir()


def _simple_inputs(
    rows: int = 1, seed: int = 0, binary: bool = True
) -> tuple[list[httpclient.InferInput], np.ndarray, np.ndarray]:
    a, b = simple_rows(rows, seed=seed)
    inputs = []
    for name, array in (("INPUT0", a), ("INPUT1", b)):
        tensor = httpclient.InferInput(name, list(array.shape), "INT32")
        tensor.set_data_from_numpy(array, binary_data=binary)
        inputs.append(tensor)
    return inputs, a, b


# -- 1. timeout 0 means no timeout -----------------------------------------------------------------


@pytest.mark.parametrize("binary", [True, False])
def test_timeout_zero_is_no_timeout(client: httpclient.InferenceServerClient, binary: bool) -> None:
    """simple_http_infer_client.py's calls, with ``timeout=0`` as Triton users' code passes it."""
    inputs, a, b = _simple_inputs(seed=3, binary=binary)
    outputs = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in ("OUTPUT0", "OUTPUT1")]
    result = client.infer("simple", inputs, outputs=outputs, timeout=0, request_id="t0")
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)
    assert result.get_response()["id"] == "t0"
    result = client.infer("simple", inputs, timeout=0)  # no outputs named: all of them
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)


# -- 2. raw binary requests ------------------------------------------------------------------------


def test_raw_binary_request(http: httpx.Client) -> None:
    values = np.arange(8, dtype=np.float32)
    response = http.post(
        "/v2/models/identity_fp32/infer",
        content=values.tobytes(),
        headers={"Inference-Header-Content-Length": "0", "Content-Type": "application/octet-stream"},
    )
    assert response.status_code == 200, response.text
    header_length = int(response.headers["inference-header-content-length"])
    result = httpclient.InferResult.from_response_body(response.content, header_length=header_length)
    output = result.as_numpy("OUTPUT0")
    assert output is not None and output.shape == (1, 8)
    np.testing.assert_array_equal(output[0], values)


def test_raw_binary_bytes_and_refusals(http: httpx.Client) -> None:
    headers = {"Inference-Header-Content-Length": "0"}
    response = http.post("/v2/models/identity_bytes/infer", content=b"427", headers=headers)
    assert response.status_code == 200, response.text
    header_length = int(response.headers["inference-header-content-length"])
    assert response.content[header_length + 4 :] == b"427"  # BYTES come back length-prefixed
    message = assert_json_error(
        http.post("/v2/models/simple/infer", content=b"\0" * 64, headers=headers), 400
    )
    assert "must only have 1 input" in message


# -- 3. compressed bodies --------------------------------------------------------------------------


@pytest.mark.parametrize("request_algorithm", [None, "gzip", "deflate"])
@pytest.mark.parametrize("response_algorithm", [None, "gzip", "deflate"])
def test_tritonclient_compression(
    client: httpclient.InferenceServerClient, request_algorithm: str | None, response_algorithm: str | None
) -> None:
    inputs, a, b = _simple_inputs(rows=8, seed=4)
    result = client.infer(
        "simple",
        inputs,
        request_compression_algorithm=request_algorithm,
        response_compression_algorithm=response_algorithm,
    )
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)


@pytest.mark.parametrize("coding", ["gzip", "deflate"])
def test_responses_follow_accept_encoding(http: httpx.Client, coding: str) -> None:
    a, b = simple_rows(8, seed=5)
    response = http.post(
        "/v2/models/simple/infer", json=simple_json_request(a, b), headers={"Accept-Encoding": coding}
    )
    assert response.status_code == 200
    assert response.headers["content-encoding"] == coding  # httpx has decoded it for us
    assert response.json()["outputs"][0]["data"] == (a + b).ravel().tolist()


def test_a_zip_bomb_is_413_and_the_server_keeps_serving(
    server: RunningServer, client: httpclient.InferenceServerClient
) -> None:
    bomb = gzip.compress(b" " * (65 << 20), compresslevel=9)  # 65 MiB of spaces: over the 64 MiB limit
    with httpx.Client(base_url=server.base_url, timeout=60) as raw:
        response = raw.post("/v2/models/simple/infer", content=bomb, headers={"Content-Encoding": "gzip"})
        assert "exceeds the limit" in assert_json_error(response, 413)
        unsupported = raw.post("/v2/models/simple/infer", content=b"x", headers={"Content-Encoding": "br"})
        assert "unsupported Content-Encoding" in assert_json_error(unsupported, 415)
        broken = raw.post(
            "/v2/models/simple/infer",
            content=zlib.compress(b"{}")[:-3],
            headers={"Content-Encoding": "deflate"},
        )
        assert_json_error(broken, 400)
    inputs, a, b = _simple_inputs(seed=6)
    np.testing.assert_array_equal(client.infer("simple", inputs).as_numpy("OUTPUT0"), a + b)


# -- 4. classification -----------------------------------------------------------------------------


def test_classification_of_simple(client: httpclient.InferenceServerClient) -> None:
    inputs, a, b = _simple_inputs(rows=2, seed=7)
    outputs = [
        httpclient.InferRequestedOutput("OUTPUT0", binary_data=True, class_count=3),
        httpclient.InferRequestedOutput("OUTPUT1", binary_data=False, class_count=2),
    ]
    result = client.infer("simple", inputs, outputs=outputs)
    top = result.as_numpy("OUTPUT0")
    assert top is not None and top.shape == (2, 3)
    for row, sums in zip(top, a + b, strict=True):
        expected = np.argsort(-sums, kind="stable")[:3]
        assert [entry.decode() for entry in row] == [f"{sums[i]}:{i}" for i in expected]
    assert result.as_numpy("OUTPUT1").shape == (2, 2)


# -- 5. NaN and infinities in JSON -----------------------------------------------------------------


def test_nan_and_infinities_travel_as_json(client: httpclient.InferenceServerClient) -> None:
    values = np.array([[np.nan, np.inf, -np.inf, 1.5]], dtype=np.float32)
    tensor = httpclient.InferInput("INPUT0", [1, 4], "FP32")
    tensor.set_data_from_numpy(values, binary_data=False)
    result = client.infer(
        "identity_fp32", [tensor], outputs=[httpclient.InferRequestedOutput("OUTPUT0", binary_data=False)]
    )
    output = result.as_numpy("OUTPUT0")
    assert output is not None
    np.testing.assert_array_equal(output, values)  # NaN equals NaN here; the infinities keep their sign


# -- 7. system shared memory -----------------------------------------------------------------------


@pytest.fixture
def shm_client(client: httpclient.InferenceServerClient) -> Iterator[httpclient.InferenceServerClient]:
    if not HAS_POSIX_SHM:
        pytest.skip("no POSIX shared memory on this machine")
    client.unregister_system_shared_memory()
    client.unregister_cuda_shared_memory()  # no GPU pool: nothing registered, and not an error
    try:
        yield client
    finally:
        client.unregister_system_shared_memory()


def _key(prefix: str) -> str:
    return f"/{prefix}_{uuid.uuid4().hex[:8]}"


def test_simple_http_shm_client(shm_client: httpclient.InferenceServerClient) -> None:
    """The calls of tritonclient's simple_http_shm_client.py, against the example ``simple``."""
    input0_data = np.arange(start=0, stop=16, dtype=np.int32)
    input1_data = np.ones(shape=16, dtype=np.int32)
    input_byte_size = input0_data.size * input0_data.itemsize
    output_byte_size = input_byte_size
    out_key, in_key = _key("output_simple"), _key("input_simple")
    shm_op_handle = shm.create_shared_memory_region("output_data", out_key, output_byte_size * 2)
    shm_ip_handle = shm.create_shared_memory_region("input_data", in_key, input_byte_size * 2)
    try:
        shm_client.register_system_shared_memory("output_data", out_key, output_byte_size * 2)
        shm.set_shared_memory_region(shm_ip_handle, [input0_data])
        shm.set_shared_memory_region(shm_ip_handle, [input1_data], offset=input_byte_size)
        shm_client.register_system_shared_memory("input_data", in_key, input_byte_size * 2)
        inputs = [
            httpclient.InferInput("INPUT0", [1, 16], "INT32"),
            httpclient.InferInput("INPUT1", [1, 16], "INT32"),
        ]
        inputs[0].set_shared_memory("input_data", input_byte_size)
        inputs[1].set_shared_memory("input_data", input_byte_size, offset=input_byte_size)
        outputs = [
            httpclient.InferRequestedOutput("OUTPUT0", binary_data=True),
            httpclient.InferRequestedOutput("OUTPUT1", binary_data=True),
        ]
        outputs[0].set_shared_memory("output_data", output_byte_size)
        outputs[1].set_shared_memory("output_data", output_byte_size, offset=output_byte_size)
        results = shm_client.infer(model_name="simple", inputs=inputs, outputs=outputs)
        output0, output1 = results.get_output("OUTPUT0"), results.get_output("OUTPUT1")
        assert output0 is not None and output1 is not None
        assert "data" not in output0 and "binary_data_size" not in output0["parameters"]  # not in the body
        dtype = utils.triton_to_np_dtype(output0["datatype"])
        output0_data = shm.get_contents_as_numpy(shm_op_handle, dtype, output0["shape"])
        output1_data = shm.get_contents_as_numpy(
            shm_op_handle, dtype, output1["shape"], offset=output_byte_size
        )
        np.testing.assert_array_equal(output0_data[0], input0_data + input1_data)
        np.testing.assert_array_equal(output1_data[0], input0_data - input1_data)
        status = shm_client.get_system_shared_memory_status()
        assert sorted(region["name"] for region in status) == ["input_data", "output_data"]
        assert shm_client.get_system_shared_memory_status(region_name="input_data") == [
            {"name": "input_data", "key": in_key, "offset": 0, "byte_size": input_byte_size * 2}
        ]
        shm_client.unregister_system_shared_memory()
        assert shm_client.get_system_shared_memory_status() == []
    finally:
        shm.destroy_shared_memory_region(shm_ip_handle)
        shm.destroy_shared_memory_region(shm_op_handle)


def test_simple_http_shm_string_client(shm_client: httpclient.InferenceServerClient) -> None:
    """The calls of tritonclient's simple_http_shm_string_client.py, against ``simple_string``."""
    in0 = np.arange(start=0, stop=16, dtype=np.int32)
    in1 = np.ones(shape=16, dtype=np.int32)
    input0_data = np.array([str(x).encode("utf-8") for x in in0], dtype=object)
    input1_data = np.array([str(x).encode("utf-8") for x in in1], dtype=object)
    expected_sum = np.array([str(x).encode("utf-8") for x in in0 + in1], dtype=object)
    expected_diff = np.array([str(x).encode("utf-8") for x in in0 - in1], dtype=object)
    serialized = [
        utils.serialize_byte_tensor(t) for t in (input0_data, input1_data, expected_sum, expected_diff)
    ]
    in0_size, in1_size, out0_size, out1_size = (utils.serialized_byte_size(s) for s in serialized)
    keys = {name: _key(name) for name in ("output0_data", "output1_data", "input0_data", "input1_data")}
    handles = {
        "output0_data": shm.create_shared_memory_region("output0_data", keys["output0_data"], out0_size),
        "output1_data": shm.create_shared_memory_region("output1_data", keys["output1_data"], out1_size),
        "input0_data": shm.create_shared_memory_region("input0_data", keys["input0_data"], in0_size),
        "input1_data": shm.create_shared_memory_region("input1_data", keys["input1_data"], in1_size),
    }
    try:
        shm_client.register_system_shared_memory("output0_data", keys["output0_data"], out0_size)
        shm_client.register_system_shared_memory("output1_data", keys["output1_data"], out1_size)
        shm.set_shared_memory_region(handles["input0_data"], [serialized[0]])
        shm.set_shared_memory_region(handles["input1_data"], [serialized[1]])
        shm_client.register_system_shared_memory("input0_data", keys["input0_data"], in0_size)
        shm_client.register_system_shared_memory("input1_data", keys["input1_data"], in1_size)
        inputs = [
            httpclient.InferInput("INPUT0", [1, 16], "BYTES"),
            httpclient.InferInput("INPUT1", [1, 16], "BYTES"),
        ]
        inputs[0].set_shared_memory("input0_data", in0_size)
        inputs[1].set_shared_memory("input1_data", in1_size)
        outputs = [
            httpclient.InferRequestedOutput("OUTPUT0", binary_data=True),
            httpclient.InferRequestedOutput("OUTPUT1", binary_data=True),
        ]
        outputs[0].set_shared_memory("output0_data", out0_size)
        outputs[1].set_shared_memory("output1_data", out1_size)
        results = shm_client.infer(model_name="simple_string", inputs=inputs, outputs=outputs)
        output0, output1 = results.get_output("OUTPUT0"), results.get_output("OUTPUT1")
        dtype = utils.triton_to_np_dtype(output0["datatype"])
        output0_data = shm.get_contents_as_numpy(handles["output0_data"], dtype, output0["shape"])
        output1_data = shm.get_contents_as_numpy(handles["output1_data"], dtype, output1["shape"])
        assert list(output0_data[0]) == list(expected_sum)
        assert list(output1_data[0]) == list(expected_diff)
    finally:
        shm_client.unregister_system_shared_memory()
        for handle in handles.values():
            shm.destroy_shared_memory_region(handle)


def test_shared_memory_mistakes_are_clear_4xx(shm_client: httpclient.InferenceServerClient) -> None:
    key = _key("small")
    handle = shm.create_shared_memory_region("small", key, 16)
    try:
        shm_client.register_system_shared_memory("small", key, 16)
        with pytest.raises(InferenceServerException, match="already in manager"):
            shm_client.register_system_shared_memory("small", key, 16)
        with pytest.raises(InferenceServerException, match="Unable to open shared memory region"):
            shm_client.register_system_shared_memory("missing", _key("never_created"), 16)
        inputs, _, _ = _simple_inputs()
        output = httpclient.InferRequestedOutput("OUTPUT0")
        output.set_shared_memory("small", 16)  # 64 bytes of results do not fit
        with pytest.raises(InferenceServerException, match="should be at least 64 bytes"):
            shm_client.infer("simple", inputs, outputs=[output])
        unknown = httpclient.InferInput("INPUT0", [1, 16], "INT32")
        unknown.set_shared_memory("nowhere", 64)
        with pytest.raises(InferenceServerException, match="Unable to find shared memory region: 'nowhere'"):
            shm_client.infer("simple", [unknown, inputs[1]])
        with pytest.raises(InferenceServerException, match="CUDA shared memory needs a GPU pool"):
            shm_client.register_cuda_shared_memory("gpu", b"handle", 0, 16)
        assert shm_client.get_cuda_shared_memory_status() == []
    finally:
        shm_client.unregister_system_shared_memory()
        shm.destroy_shared_memory_region(handle)


# -- 8. limits Triton enforces ---------------------------------------------------------------------


def test_bytes_json_nested_deeper_than_100_is_400(http: httpx.Client) -> None:
    data: object = "x"
    for _ in range(101):
        data = [data]
    body = {"inputs": [{"name": "INPUT0", "shape": [1, 1], "datatype": "BYTES", "data": data}]}
    message = assert_json_error(http.post("/v2/models/identity_bytes/infer", json=body), 400)
    assert "nesting depth exceeds the maximum allowed limit (100)" in message


@pytest.mark.parametrize("limit", ["0", "-5"])
def test_max_body_bytes_must_be_positive(example_repo: Path, limit: str) -> None:
    result = subprocess.run(
        [
            *tierserve_command(),
            "serve",
            "--model-repository",
            str(example_repo),
            "--port",
            "1",
            "--max-body-bytes",
            limit,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == f"tierserve: --max-body-bytes must be positive, got {limit}"


# -- the upstream example scripts, when a copy of them is at hand ----------------------------------


EXAMPLES_DIR = os.environ.get("TRITON_CLIENT_EXAMPLES")  # e.g. a checkout's src/python/examples


@pytest.mark.skipif(
    not EXAMPLES_DIR, reason="set TRITON_CLIENT_EXAMPLES to tritonclient's examples directory"
)
@pytest.mark.parametrize(
    "script, args",
    [
        ("simple_http_infer_client.py", []),
        ("simple_http_infer_client.py", ["--request-compression-algorithm", "gzip"]),
        ("simple_http_infer_client.py", ["--response-compression-algorithm", "deflate"]),
        ("simple_http_shm_client.py", []),
        ("simple_http_shm_string_client.py", []),
    ],
)
def test_upstream_example_scripts_run_unchanged(server: RunningServer, script: str, args: list[str]) -> None:
    path = Path(str(EXAMPLES_DIR)) / script
    result = subprocess.run(
        [sys.executable, str(path), "-u", server.url, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
