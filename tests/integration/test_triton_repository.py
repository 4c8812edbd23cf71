"""A Triton model repository (``config.pbtxt`` files, Triton's own ``simple`` configuration among
them) served as Triton serves it, and model control with Triton's load overrides, through
``tritonclient.http``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from support.server import RunningServer, start_server
from support.v2 import assert_json_error, simple_rows

pytestmark = pytest.mark.integration

# Triton's example configuration of ``simple`` (docs/examples/model_repository/simple/config.pbtxt),
# platform and all: tierserve serves the directory's model.onnx and logs the platform it cannot honour.
TRITON_SIMPLE = """
name: "simple"
platform: "tensorflow_graphdef"
max_batch_size: 8
input [
  {
    name: "INPUT0"
    data_type: TYPE_INT32
    dims: [ 16 ]
  },
  {
    name: "INPUT1"
    data_type: TYPE_INT32
    dims: [ 16 ]
  }
]
output [
  {
    name: "OUTPUT0"
    data_type: TYPE_INT32
    dims: [ 16 ]
  },
  {
    name: "OUTPUT1"
    data_type: TYPE_INT32
    dims: [ 16 ]
  }
]
"""

NOT_BATCHING = """
# identity_fp32's graph has a dynamic first dimension; Triton's max_batch_size: 0 means no batching.
max_batch_size: 0
input [ { name: "INPUT0", data_type: TYPE_FP32, dims: [ -1, -1 ] } ]
output [ { name: "OUTPUT0", data_type: TYPE_FP32, dims: [ -1, -1 ] } ]
"""

CLASSIFIER = """
name: "classifier"
backend: "onnxruntime"
max_batch_size: 4
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 3 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 3 ] label_filename: "labels.txt" } ]
dynamic_batching {
  max_queue_delay_microseconds: 500
  preferred_batch_size: [ 2, 4 ]
  default_queue_policy { max_queue_size: 16 }
}
instance_group [ { count: 2, kind: KIND_CPU } ]
version_policy: { latest: { num_versions: 1 } }
response_cache { enable: false }
"""

RESHAPED = """
max_batch_size: 8
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 2, 2 ] reshape: { shape: [ 4 ] } } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 2, 2 ] reshape: { shape: [ 4 ] } } ]
"""

BOTH = """
max_batch_size: 4
dynamic_batching { max_queue_delay_microseconds: 2000 }
"""


def _model(repo: Path, name: str, source: Path, pbtxt: str | None = None) -> Path:
    model_dir = repo / name
    (model_dir / "1").mkdir(parents=True)
    shutil.copy(source / "1" / "model.onnx", model_dir / "1" / "model.onnx")
    if pbtxt is not None:
        (model_dir / "config.pbtxt").write_text(pbtxt)
    return model_dir


@pytest.fixture(scope="module")
def triton_repo(example_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("triton-repo")
    _model(repo, "simple", example_repo / "simple", TRITON_SIMPLE)
    _model(repo, "not_batching", example_repo / "identity_fp32", NOT_BATCHING)
    classifier = _model(repo, "classifier", example_repo / "identity_fp32", CLASSIFIER)
    (classifier / "labels.txt").write_text("cat\ndog\nfox\n")
    _model(repo, "reshaped", example_repo / "identity_fp32", RESHAPED)
    both = _model(repo, "both", example_repo / "identity_fp32", BOTH)
    (both / "config.yaml").write_text("max_batch_size: 2\n")  # config.yaml wins where both say
    plan = repo / "tensorrt_model"  # a Triton repository may hold models of other backends
    (plan / "1").mkdir(parents=True)
    (plan / "1" / "model.plan").write_bytes(b"not onnx")
    (plan / "config.pbtxt").write_text('platform: "tensorrt_plan"\nmax_batch_size: 8\n')
    return repo


@pytest.fixture(scope="module")
def triton_server(triton_repo: Path) -> Iterator[RunningServer]:
    with start_server(triton_repo) as running:
        yield running


@pytest.fixture
def tclient(triton_server: RunningServer) -> Iterator[httpclient.InferenceServerClient]:
    client = httpclient.InferenceServerClient(url=triton_server.url, network_timeout=60.0)
    try:
        yield client
    finally:
        client.close()


def test_tritons_simple_configuration_is_served_as_triton_would(
    tclient: httpclient.InferenceServerClient, triton_server: RunningServer
) -> None:
    config = tclient.get_model_config("simple")
    assert config["max_batch_size"] == 8
    assert [(t["name"], t["data_type"], t["dims"]) for t in config["input"]] == [
        ("INPUT0", "TYPE_INT32", [16]),
        ("INPUT1", "TYPE_INT32", [16]),
    ]
    metadata = tclient.get_model_metadata("simple")
    assert metadata["inputs"][0]["shape"] == [-1, 16]
    a, b = simple_rows(3, seed=11)
    inputs = [
        httpclient.InferInput("INPUT0", [3, 16], "INT32"),
        httpclient.InferInput("INPUT1", [3, 16], "INT32"),
    ]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b)
    result = tclient.infer("simple", inputs)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)
    log = triton_server.log_text()
    assert log.count("field platform (tensorflow_graphdef") == 1  # logged once, by name


def test_max_batch_size_zero_is_not_batching(tclient: httpclient.InferenceServerClient) -> None:
    assert tclient.get_model_config("not_batching")["max_batch_size"] == 0
    values = np.arange(6, dtype=np.float32).reshape(2, 3)
    tensor = httpclient.InferInput("INPUT0", [2, 3], "FP32")
    tensor.set_data_from_numpy(values)
    result = tclient.infer("not_batching", [tensor])
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), values)


def test_classification_uses_the_label_file(
    tclient: httpclient.InferenceServerClient, triton_server: RunningServer
) -> None:
    config = tclient.get_model_config("classifier")
    assert config["max_batch_size"] == 4
    assert config["dynamic_batching"]["max_queue_delay_microseconds"] == 500
    assert config["instance_group"][0]["count"] == 2
    assert config["output"][0]["label_filename"] == "labels.txt"
    scores = np.array([[0.1, 0.7, 0.2], [0.5, 0.2, 0.3]], dtype=np.float32)
    tensor = httpclient.InferInput("INPUT0", [2, 3], "FP32")
    tensor.set_data_from_numpy(scores)
    output = httpclient.InferRequestedOutput("OUTPUT0", class_count=2)
    top = tclient.infer("classifier", [tensor], outputs=[output]).as_numpy("OUTPUT0")
    assert top is not None
    assert top.tolist() == [[b"0.700000:1:dog", b"0.200000:2:fox"], [b"0.500000:0:cat", b"0.300000:2:fox"]]
    assert "field dynamic_batching.preferred_batch_size is not honoured" in triton_server.log_text()


def test_reshape_between_clients_and_the_model(tclient: httpclient.InferenceServerClient) -> None:
    metadata = tclient.get_model_metadata("reshaped")
    assert metadata["inputs"][0]["shape"] == [-1, 2, 2]
    values = np.arange(8, dtype=np.float32).reshape(2, 2, 2)
    tensor = httpclient.InferInput("INPUT0", [2, 2, 2], "FP32")
    tensor.set_data_from_numpy(values)
    output = tclient.infer("reshaped", [tensor]).as_numpy("OUTPUT0")
    np.testing.assert_array_equal(output, values)
    wrong = httpclient.InferInput("INPUT0", [1, 4], "FP32")
    wrong.set_data_from_numpy(np.zeros((1, 4), dtype=np.float32))
    with pytest.raises(InferenceServerException, match="expects \\[-1, 2, 2\\]"):
        tclient.infer("reshaped", [wrong])


def test_config_yaml_wins_over_config_pbtxt(tclient: httpclient.InferenceServerClient) -> None:
    config = tclient.get_model_config("both")
    assert config["max_batch_size"] == 2  # config.yaml
    assert config["dynamic_batching"]["max_queue_delay_microseconds"] == 2000  # config.pbtxt


def test_an_unparsable_config_pbtxt_makes_that_model_unavailable_with_the_reason(
    triton_repo: Path, example_repo: Path, tclient: httpclient.InferenceServerClient
) -> None:
    _model(
        triton_repo, "broken", example_repo / "identity_fp32", 'max_batch_size: 8\ninput [ { name: "INPUT0" '
    )
    with pytest.raises(InferenceServerException, match="not valid protobuf text format"):
        tclient.load_model("broken")
    (row,) = [r for r in tclient.get_model_repository_index() if r["name"] == "broken"]
    assert row["state"] == "UNAVAILABLE" and "line 2" in row["reason"]
    assert not tclient.is_model_ready("broken")
    assert tclient.is_model_ready("simple")  # one broken model affects only itself


def test_a_model_of_another_backend_is_listed_unavailable_with_the_reason(
    tclient: httpclient.InferenceServerClient, triton_server: RunningServer
) -> None:
    (row,) = [r for r in tclient.get_model_repository_index() if r["name"] == "tensorrt_model"]
    assert row["state"] == "UNAVAILABLE"
    assert row["reason"] == "no <version>/model.onnx (tierserve serves ONNX models): 1/model.plan"
    assert "model tensorrt_model is not served" in triton_server.log_text()
    assert tclient.is_server_ready()  # what tierserve cannot serve does not hold readiness down


# -- model control with Triton's overrides --------------------------------------------------------


def test_load_with_a_config_override_then_without(tclient: httpclient.InferenceServerClient) -> None:
    override = json.dumps({"max_batch_size": 2, "dynamic_batching": {"max_queue_delay_microseconds": 100}})
    tclient.load_model("not_batching", config=override)
    config = tclient.get_model_config("not_batching")
    assert config["max_batch_size"] == 2 and config["dynamic_batching"]["max_queue_delay_microseconds"] == 100
    tclient.load_model("not_batching")  # no override: back to the repository's config.pbtxt
    assert tclient.get_model_config("not_batching")["max_batch_size"] == 0


def test_load_with_files_serves_a_model_the_repository_does_not_hold(
    tclient: httpclient.InferenceServerClient, example_repo: Path
) -> None:
    model = (example_repo / "identity_int32" / "1" / "model.onnx").read_bytes()
    config = json.dumps({"name": "uploaded", "max_batch_size": 4})
    tclient.load_model("uploaded", config=config, files={"file:1/model.onnx": model})
    assert tclient.is_model_ready("uploaded")
    values = np.arange(6, dtype=np.int32).reshape(2, 3)
    tensor = httpclient.InferInput("INPUT0", [2, 3], "INT32")
    tensor.set_data_from_numpy(values)
    np.testing.assert_array_equal(tclient.infer("uploaded", [tensor]).as_numpy("OUTPUT0"), values)
    assert tclient.get_model_config("uploaded")["max_batch_size"] == 4
    tclient.unload_model("uploaded")


def test_load_override_mistakes_are_400_and_unknown_models_404(triton_server: RunningServer) -> None:
    with httpx.Client(base_url=triton_server.base_url, timeout=60) as http:
        load = "/v2/repository/models/{}/load"
        files_only = {"parameters": {"file:1/model.onnx": "AAAA"}}
        assert "needs a 'config'" in assert_json_error(http.post(load.format("x"), json=files_only), 400)
        escape = {"parameters": {"config": "{}", "file:../evil/1/model.onnx": "AAAA"}}
        assert "inside the model's directory" in assert_json_error(
            http.post(load.format("x"), json=escape), 400
        )
        bad_json = {"parameters": {"config": "{not json"}}
        parse_error = assert_json_error(http.post(load.format("simple"), json=bad_json), 400)
        assert "failed to parse the load parameter 'config' JSON" in parse_error
        other = {"parameters": {"config": json.dumps({"name": "other"})}}
        assert "does not match" in assert_json_error(http.post(load.format("simple"), json=other), 400)
        message = assert_json_error(http.post(load.format("no_such_model"), json={}), 404)
        assert message.startswith("Request for unknown model")
        assert http.get("/v2/models/simple/ready").status_code == 200
