"""Triton's GRPCInferenceService on a real server, through ``tritonclient.grpc`` unchanged (and its
generated stubs where a test needs a request the client never builds: typed contents)."""

from __future__ import annotations

import json
import queue
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from grpc_api.conftest import GrpcServer, start_grpc_server
from support.v2 import UNKNOWN_MODEL_PREFIX, model_stats, simple_rows

pytestmark = pytest.mark.integration


def simple_inputs(a: np.ndarray, b: np.ndarray) -> list[grpcclient.InferInput]:
    inputs = []
    for name, array in (("INPUT0", a), ("INPUT1", b)):
        tensor = grpcclient.InferInput(name, list(array.shape), "INT32")
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


def status_of(exc: InferenceServerException) -> str:
    return str(exc.status())


@pytest.fixture
def http(grpc_server: GrpcServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=grpc_server.server.base_url, timeout=30.0) as client:
        yield client


@pytest.fixture
def stub(grpc_server: GrpcServer) -> Iterator[Any]:
    with grpc.insecure_channel(grpc_server.grpc_url) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


# -- health, metadata, configuration, statistics ---------------------------------------------------


def test_health_and_metadata_agree_with_rest(
    client: grpcclient.InferenceServerClient, http: httpx.Client
) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("simple")
    assert not client.is_model_ready("no-such-model")
    server = client.get_server_metadata(as_json=True)
    rest_server = http.get("/v2").json()
    assert {k: v for k, v in server.items() if k != "extensions"} == {
        k: v for k, v in rest_server.items() if k in server and k != "extensions"
    }
    # Shared memory is registered over REST only, so gRPC does not claim it.
    assert server["extensions"] == [e for e in rest_server["extensions"] if e != "system_shared_memory"]
    assert "model_repository" in server["extensions"] and "classification" in server["extensions"]
    metadata = client.get_model_metadata("simple", as_json=True)
    rest = http.get("/v2/models/simple").json()
    assert metadata["name"] == "simple" and metadata["versions"] == rest["versions"] == ["1"]
    assert metadata["platform"] == rest["platform"]
    assert [(t["name"], t["datatype"], [int(d) for d in t["shape"]]) for t in metadata["inputs"]] == [
        (t["name"], t["datatype"], t["shape"]) for t in rest["inputs"]
    ]
    versioned = client.get_model_metadata("simple", model_version="1", as_json=True)
    assert versioned["versions"] == ["1"]


def test_model_config_is_what_perf_analyzer_reads(
    client: grpcclient.InferenceServerClient, http: httpx.Client
) -> None:
    config = client.get_model_config("simple", as_json=True)["config"]
    rest = http.get("/v2/models/simple/config").json()
    assert config["name"] == "simple" and config["backend"] == "onnxruntime"
    assert int(config["max_batch_size"]) == rest["max_batch_size"] > 0
    assert [(t["name"], t["data_type"], [int(d) for d in t["dims"]]) for t in config["input"]] == [
        ("INPUT0", "TYPE_INT32", [16]),
        ("INPUT1", "TYPE_INT32", [16]),
    ]
    assert "dynamic_batching" in config
    assert config["instance_group"][0]["kind"] == "KIND_CPU"


def test_statistics_count_grpc_inferences(client: grpcclient.InferenceServerClient) -> None:
    def count() -> int:
        stats = client.get_inference_statistics("simple", as_json=True)["model_stats"][0]
        return int(stats.get("inference_count", 0))

    before = count()
    client.infer("simple", simple_inputs(*simple_rows(2)))
    assert count() == before + 2
    every = client.get_inference_statistics(as_json=True)["model_stats"]
    assert {row["name"] for row in every} >= {"simple", "identity_fp32"}
    with pytest.raises(InferenceServerException) as error:
        client.get_inference_statistics("no-such-model")
    assert status_of(error.value) == "StatusCode.NOT_FOUND"


# -- inference -------------------------------------------------------------------------------------


def test_simple_with_raw_contents(client: grpcclient.InferenceServerClient) -> None:
    a, b = simple_rows(3, seed=4)
    result = client.infer("simple", simple_inputs(a, b), request_id="r-1")
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)
    response = result.get_response()
    assert response.id == "r-1" and response.model_name == "simple" and response.model_version == "1"
    only = client.infer("simple", simple_inputs(a, b), outputs=[grpcclient.InferRequestedOutput("OUTPUT1")])
    assert [o.name for o in only.get_response().outputs] == ["OUTPUT1"]
    np.testing.assert_array_equal(only.as_numpy("OUTPUT1"), a - b)


@pytest.mark.parametrize(
    ("model", "datatype", "array"),
    [
        ("identity_fp16", "FP16", np.array([[1.5, -2.25, 65504.0]], dtype=np.float16)),
        ("identity_fp64", "FP64", np.array([[1e300, -0.5]], dtype=np.float64)),
        ("identity_int8", "INT8", np.array([[-128, 127, 0]], dtype=np.int8)),
        ("identity_uint8", "UINT8", np.array([[0, 255]], dtype=np.uint8)),
        ("identity_bool", "BOOL", np.array([[True, False, True]])),
        ("identity_bytes", "BYTES", np.array([[b"", "é".encode(), b"a\x00b"]], dtype=object)),
    ],
)
def test_every_datatype_round_trips_raw(
    client: grpcclient.InferenceServerClient, model: str, datatype: str, array: np.ndarray
) -> None:
    tensor = grpcclient.InferInput("INPUT0", list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    out = client.infer(model, [tensor]).as_numpy("OUTPUT0")
    assert out is not None and out.shape == array.shape
    np.testing.assert_array_equal(out, array)


def typed_request(model: str, datatype: str, shape: list[int], **contents: Any) -> Any:
    request = service_pb2.ModelInferRequest(model_name=model)
    tensor = request.inputs.add(name="INPUT0", datatype=datatype, shape=shape)
    for field, values in contents.items():
        getattr(tensor.contents, field).extend(values)
    return request


def raw_output(response: Any, dtype: Any) -> np.ndarray:
    return np.frombuffer(response.raw_output_contents[0], dtype=dtype).reshape(
        tuple(response.outputs[0].shape)
    )


def test_typed_contents_are_accepted_and_checked(stub: Any) -> None:
    response = stub.ModelInfer(typed_request("identity_fp32", "FP32", [1, 3], fp32_contents=[1.0, 2.5, -3.0]))
    np.testing.assert_array_equal(raw_output(response, np.float32), [[1.0, 2.5, -3.0]])
    response = stub.ModelInfer(typed_request("identity_int8", "INT8", [1, 2], int_contents=[-128, 127]))
    np.testing.assert_array_equal(raw_output(response, np.int8), [[-128, 127]])
    response = stub.ModelInfer(typed_request("identity_bytes", "BYTES", [1, 2], bytes_contents=[b"ab", b""]))
    assert response.raw_output_contents[0] == b"\x02\x00\x00\x00ab\x00\x00\x00\x00"
    for bad, message in [
        (typed_request("identity_int8", "INT8", [1, 1], int_contents=[300]), "out of range"),
        (typed_request("identity_fp32", "FP32", [1, 3], fp32_contents=[1.0]), "1 values in fp32_contents"),
        (typed_request("identity_fp16", "FP16", [1, 1]), "raw_input_contents"),
    ]:
        with pytest.raises(grpc.RpcError) as error:
            stub.ModelInfer(bad)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert message in error.value.details()


def test_errors_map_to_grpc_codes_and_the_server_keeps_serving(
    client: grpcclient.InferenceServerClient, stub: Any
) -> None:
    a, b = simple_rows(1)
    with pytest.raises(InferenceServerException) as error:
        client.infer("no-such-model", simple_inputs(a, b))
    assert status_of(error.value) == "StatusCode.NOT_FOUND"
    assert error.value.message().startswith(UNKNOWN_MODEL_PREFIX)
    with pytest.raises(InferenceServerException) as error:
        client.infer("simple", simple_inputs(a, b), model_version="9")
    assert status_of(error.value) == "StatusCode.NOT_FOUND"
    wrong = grpcclient.InferInput("INPUT0", [1, 15], "INT32")
    wrong.set_data_from_numpy(np.zeros((1, 15), dtype=np.int32))
    with pytest.raises(InferenceServerException) as error:
        client.infer("simple", [wrong, simple_inputs(a, b)[1]])
    assert status_of(error.value) == "StatusCode.INVALID_ARGUMENT"
    request = service_pb2.ModelInferRequest(model_name="simple")
    request.inputs.add(name="INPUT0", datatype="INT32", shape=[1, 16])
    request.inputs.add(name="INPUT1", datatype="INT32", shape=[1, 16])
    request.raw_input_contents.append(a.tobytes())  # one raw entry for two inputs
    with pytest.raises(grpc.RpcError) as rpc_error:
        stub.ModelInfer(request)
    assert rpc_error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "raw_input_contents holds 1 entries for 2 inputs" in rpc_error.value.details()
    request.raw_input_contents.append(b"\x00" * 7)  # not 16 INT32s
    with pytest.raises(grpc.RpcError) as rpc_error:
        stub.ModelInfer(request)
    assert rpc_error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    result = client.infer("simple", simple_inputs(a, b))
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)


def test_tiers_from_parameters_and_metadata(
    client: grpcclient.InferenceServerClient, http: httpx.Client
) -> None:
    def tier_count(tier: str) -> int:
        stats = model_stats(http, "simple")
        return sum(int(d["count"]) for d in stats.get("tier_stats", {}).get(tier, {}).values())

    before = {tier: tier_count(tier) for tier in ("gold", "silver", "bronze")}
    inputs = simple_inputs(*simple_rows(1))
    client.infer("simple", inputs, headers={"x-tier": "bronze"})
    client.infer("simple", inputs, parameters={"tier": "silver"})
    client.infer(
        "simple", inputs, parameters={"tier": "gold"}, headers={"x-tier": "bronze"}
    )  # parameter wins
    assert {tier: tier_count(tier) - before[tier] for tier in before} == {"gold": 1, "silver": 1, "bronze": 1}
    with pytest.raises(InferenceServerException) as error:
        client.infer("simple", inputs, parameters={"tier": "platinum"})
    assert status_of(error.value) == "StatusCode.INVALID_ARGUMENT"


def test_streaming_answers_every_request_and_survives_a_bad_one(grpc_server: GrpcServer) -> None:
    results: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client = grpc_server.client()
    client.start_stream(callback=lambda result, error: results.put((result, error)))
    try:
        sent = {}
        for index in range(20):
            a, b = simple_rows(1, seed=index)
            sent[f"s-{index}"] = a + b
            client.async_stream_infer("simple", simple_inputs(a, b), request_id=f"s-{index}")
        client.async_stream_infer("no-such-model", simple_inputs(a, b), request_id="bad")
        answered, errors = {}, []
        for _ in range(21):
            result, error = results.get(timeout=60)
            if error is not None:
                errors.append(error)
            else:
                answered[result.get_response().id] = result.as_numpy("OUTPUT0")
    finally:
        client.stop_stream()
        client.close()
    assert sorted(answered) == sorted(sent)
    for request_id, expected in sent.items():
        np.testing.assert_array_equal(answered[request_id], expected)
    assert len(errors) == 1 and UNKNOWN_MODEL_PREFIX in str(errors[0])


def test_repository_index_unload_and_load(client: grpcclient.InferenceServerClient) -> None:
    index = {row["name"]: row for row in client.get_model_repository_index(as_json=True)["models"]}
    assert index["simple"]["state"] == "READY"
    client.unload_model("identity_int64")
    try:
        assert not client.is_model_ready("identity_int64")
        states = {
            row["name"]: row.get("state") for row in client.get_model_repository_index(as_json=True)["models"]
        }
        assert states["identity_int64"] == "UNAVAILABLE"
    finally:
        client.load_model("identity_int64")
    assert client.is_model_ready("identity_int64")
    with pytest.raises(InferenceServerException) as error:
        client.load_model("no-such-model")
    assert status_of(error.value) == "StatusCode.NOT_FOUND"


def test_classification_over_grpc(client: grpcclient.InferenceServerClient) -> None:
    a, b = simple_rows(2, seed=21)
    inputs = [
        grpcclient.InferInput("INPUT0", [2, 16], "INT32"),
        grpcclient.InferInput("INPUT1", [2, 16], "INT32"),
    ]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b)
    outputs = [grpcclient.InferRequestedOutput("OUTPUT0", class_count=2)]
    top = client.infer("simple", inputs, outputs=outputs).as_numpy("OUTPUT0")
    assert top is not None and top.shape == (2, 2)
    for row, sums in zip(top, a + b, strict=True):
        first = int(np.argmax(sums))
        assert row[0].decode() == f"{sums[first]}:{first}"


def test_load_with_overrides_over_grpc(client: grpcclient.InferenceServerClient, example_repo: Path) -> None:
    """Triton's gRPC load parameters: ``config`` as a string, ``file:`` contents as bytes."""
    model = (example_repo / "identity_fp32" / "1" / "model.onnx").read_bytes()
    client.load_model(
        "grpc_uploaded", config=json.dumps({"max_batch_size": 2}), files={"file:1/model.onnx": model}
    )
    try:
        assert client.is_model_ready("grpc_uploaded")
        assert client.get_model_config("grpc_uploaded", as_json=True)["config"]["max_batch_size"] == 2
        values = np.arange(4, dtype=np.float32).reshape(2, 2)
        tensor = grpcclient.InferInput("INPUT0", [2, 2], "FP32")
        tensor.set_data_from_numpy(values)
        np.testing.assert_array_equal(client.infer("grpc_uploaded", [tensor]).as_numpy("OUTPUT0"), values)
    finally:
        client.unload_model("grpc_uploaded")
    with pytest.raises(InferenceServerException, match="needs a 'config'"):
        client.load_model("grpc_uploaded", files={"file:1/model.onnx": model})


# -- limits ----------------------------------------------------------------------------------------


def test_a_message_over_the_body_limit_is_refused(example_repo: Path) -> None:
    running = start_grpc_server(example_repo, ("--max-body-bytes", "4096"))
    with running.server, running.client() as client:
        small = grpcclient.InferInput("INPUT0", [1, 4], "FP32")
        small.set_data_from_numpy(np.ones((1, 4), dtype=np.float32))
        client.infer("identity_fp32", [small])
        big = grpcclient.InferInput("INPUT0", [1, 4096], "FP32")
        big.set_data_from_numpy(np.ones((1, 4096), dtype=np.float32))
        with pytest.raises(InferenceServerException) as error:
            client.infer("identity_fp32", [big])
        assert status_of(error.value) == "StatusCode.RESOURCE_EXHAUSTED"
        client.infer("identity_fp32", [small])


def test_model_config_with_labels_over_grpc(
    client: grpcclient.InferenceServerClient, example_repo: Path
) -> None:
    """A field of Triton's ModelConfig that tierserve fills (an output's label_filename) reaches
    the gRPC client as it reaches the REST one."""
    model = (example_repo / "identity_fp32" / "1" / "model.onnx").read_bytes()
    config = {
        "max_batch_size": 4,
        "output": [
            {"name": "OUTPUT0", "data_type": "TYPE_FP32", "dims": [-1], "label_filename": "labels.txt"}
        ],
    }
    files = {"file:1/model.onnx": model, "file:labels.txt": b"zero\none\n"}
    client.load_model("grpc_labelled", config=json.dumps(config), files=files)
    try:
        (output,) = client.get_model_config("grpc_labelled", as_json=True)["config"]["output"]
        assert output["label_filename"] == "labels.txt"
    finally:
        client.unload_model("grpc_labelled")


def test_server_ready_follows_strict_readiness(example_repo: Path, tmp_path: Path) -> None:
    import shutil

    repo = tmp_path / "models"
    for name in ("simple", "identity_fp32"):
        shutil.copytree(example_repo / name, repo / name)
    (repo / "identity_fp32" / "config.yaml").write_bytes(b"\xff not UTF-8")  # fails to load
    started = start_grpc_server(repo, ("--strict-readiness", "false"))
    with started.server:
        client = started.client()
        try:
            assert client.is_server_ready()  # as /v2/health/ready: ready, whatever the models
            assert not client.is_model_ready("identity_fp32")
        finally:
            client.close()
