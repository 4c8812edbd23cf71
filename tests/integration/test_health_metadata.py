"""Health, server metadata and model metadata (KServe V2 REST)."""

from __future__ import annotations

import httpx
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from support.v2 import JSON, UNKNOWN_MODEL_PREFIX, assert_json_error, simple_json_request, simple_rows

pytestmark = pytest.mark.integration

SIMPLE_TENSORS = (
    [{"name": name, "datatype": "INT32", "shape": [-1, 16]} for name in ("INPUT0", "INPUT1")],
    [{"name": name, "datatype": "INT32", "shape": [-1, 16]} for name in ("OUTPUT0", "OUTPUT1")],
)


def test_live_body_and_content_type(http: httpx.Client) -> None:
    response = http.get("/v2/health/live")
    assert response.status_code == 200
    assert response.headers["content-type"] == JSON
    assert response.json() == {"live": True}


def test_ready_body_and_content_type(http: httpx.Client) -> None:
    response = http.get("/v2/health/ready")
    assert response.status_code == 200
    assert response.headers["content-type"] == JSON
    assert response.json() == {"ready": True}


def test_tritonclient_sees_server_live_and_ready(client: httpclient.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()


@pytest.mark.parametrize("path", ["/v2", "/v2/"])
def test_server_metadata_lists_extensions(http: httpx.Client, path: str) -> None:
    response = http.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"] == JSON
    body = response.json()
    assert body["name"] == "tierserve"
    assert isinstance(body["version"], str) and body["version"]
    assert set(body["extensions"]) >= {
        "binary_tensor_data",
        "model_configuration",
        "statistics",
        "model_repository",
    }


def test_server_metadata_through_tritonclient(client: httpclient.InferenceServerClient) -> None:
    metadata = client.get_server_metadata()
    assert metadata["name"] == "tierserve"
    assert "binary_tensor_data" in metadata["extensions"]


def test_model_metadata(http: httpx.Client) -> None:
    response = http.get("/v2/models/simple")
    assert response.status_code == 200
    assert response.headers["content-type"] == JSON
    body = response.json()
    assert body["name"] == "simple"
    assert body["versions"] == ["1"]
    assert body["platform"]
    assert (body["inputs"], body["outputs"]) == SIMPLE_TENSORS


def test_model_metadata_of_version(http: httpx.Client) -> None:
    response = http.get("/v2/models/simple/versions/1")
    assert response.status_code == 200
    assert response.headers["content-type"] == JSON
    body = response.json()
    assert body["name"] == "simple"
    assert body["versions"] == ["1"]
    assert (body["inputs"], body["outputs"]) == SIMPLE_TENSORS


def test_model_metadata_through_tritonclient(client: httpclient.InferenceServerClient) -> None:
    metadata = client.get_model_metadata("identity_bytes", model_version="1")
    assert metadata["name"] == "identity_bytes"
    assert metadata["inputs"] == [{"name": "INPUT0", "datatype": "BYTES", "shape": [-1, -1]}]
    assert metadata["outputs"] == [{"name": "OUTPUT0", "datatype": "BYTES", "shape": [-1, -1]}]


@pytest.mark.parametrize("path", ["/v2/models/simple/ready", "/v2/models/simple/versions/1/ready"])
def test_model_ready(http: httpx.Client, path: str) -> None:
    response = http.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"] == JSON
    assert response.json() == {"name": "simple", "ready": True}


def test_model_ready_through_tritonclient(client: httpclient.InferenceServerClient) -> None:
    assert client.is_model_ready("simple")
    assert client.is_model_ready("simple", model_version="1")
    assert not client.is_model_ready("no_such_model")


def test_unknown_version_is_not_ready(http: httpx.Client) -> None:
    response = http.get("/v2/models/simple/versions/7/ready")
    assert response.status_code != 200
    assert response.headers["content-type"] == JSON
    assert "error" in response.json()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v2/models/no_such_model"),
        ("GET", "/v2/models/no_such_model/versions/1"),
        ("GET", "/v2/models/no_such_model/ready"),
        ("GET", "/v2/models/no_such_model/versions/1/ready"),
        ("GET", "/v2/models/no_such_model/config"),
        ("GET", "/v2/models/no_such_model/stats"),
        ("GET", "/v2/models/no_such_model/versions/1/stats"),
        ("POST", "/v2/models/no_such_model/infer"),
        ("POST", "/v2/models/no_such_model/versions/1/infer"),
    ],
)
def test_unknown_model_is_404(http: httpx.Client, method: str, path: str) -> None:
    a, b = simple_rows()
    body = simple_json_request(a, b) if method == "POST" else None
    response = http.request(method, path, json=body)
    message = assert_json_error(response, 404)
    assert message.startswith(UNKNOWN_MODEL_PREFIX)
    assert "no_such_model" in message


@pytest.mark.parametrize(
    "path",
    [
        "/v2/models/simple/versions/7",
        "/v2/models/simple/versions/7/config",
        "/v2/models/simple/versions/7/stats",
    ],
)
def test_unknown_version_of_known_model_is_404(http: httpx.Client, path: str) -> None:
    message = assert_json_error(http.get(path), 404)
    assert message.startswith(UNKNOWN_MODEL_PREFIX)


def test_unknown_version_infer_is_404(http: httpx.Client) -> None:
    a, b = simple_rows()
    response = http.post("/v2/models/simple/versions/7/infer", json=simple_json_request(a, b))
    assert assert_json_error(response, 404).startswith(UNKNOWN_MODEL_PREFIX)


def test_tritonclient_raises_for_unknown_model(client: httpclient.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException, match=UNKNOWN_MODEL_PREFIX):
        client.get_model_metadata("no_such_model")


def test_unknown_route_is_a_json_404(http: httpx.Client) -> None:
    assert_json_error(http.get("/v2/no/such/route"), 404)


def test_wrong_method_is_a_json_405(http: httpx.Client) -> None:
    assert_json_error(http.get("/v2/models/simple/infer"), 405)
