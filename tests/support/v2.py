"""Small helpers for talking the Open Inference Protocol (KServe V2) over raw HTTP in tests."""

from __future__ import annotations

import re
from typing import Any

import httpx
import numpy as np

JSON = "application/json"
UNKNOWN_MODEL_PREFIX = "Request for unknown model"

# What ``tierserve example-models DIR --no-minilm`` writes, sorted.
EXAMPLE_MODELS = [
    "identity_bool",
    "identity_bytes",
    "identity_fp16",
    "identity_fp32",
    "identity_fp64",
    "identity_int32",
    "identity_int64",
    "identity_int8",
    "identity_uint8",
    "simple",
    "simple_string",
]


def simple_rows(rows: int = 1, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """INPUT0 and INPUT1 for the example ``simple`` model (INT32 [rows, 16])."""
    rng = np.random.default_rng(seed)
    a = rng.integers(-1000, 1000, size=(rows, 16), dtype=np.int32)
    b = rng.integers(-1000, 1000, size=(rows, 16), dtype=np.int32)
    return a, b


def simple_json_request(a: np.ndarray, b: np.ndarray, **extra: Any) -> dict[str, Any]:
    """A JSON (flat data) infer request for ``simple``."""
    return {
        "inputs": [
            {"name": "INPUT0", "datatype": "INT32", "shape": list(a.shape), "data": a.ravel().tolist()},
            {"name": "INPUT1", "datatype": "INT32", "shape": list(b.shape), "data": b.ravel().tolist()},
        ],
        **extra,
    }


def outputs_by_name(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {output["name"]: output for output in doc["outputs"]}


def assert_json_error(response: httpx.Response, status: int) -> str:
    """The response is ``status`` with exactly ``application/json`` and ``{"error": <text>}``; the text."""
    assert response.status_code == status, f"expected {status}, got {response.status_code}: {response.text}"
    assert response.headers["content-type"] == JSON
    body = response.json()
    assert set(body) == {"error"}, body
    message = body["error"]
    assert isinstance(message, str)
    assert message.strip(), "the error message is empty"
    return message


def assert_serves_simple(http: httpx.Client, *, seed: int = 7) -> None:
    """A valid JSON request to ``simple`` still gets the right sums and differences."""
    a, b = simple_rows(2, seed=seed)
    response = http.post("/v2/models/simple/infer", json=simple_json_request(a, b))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == JSON
    outputs = outputs_by_name(response.json())
    assert outputs["OUTPUT0"]["data"] == (a + b).ravel().tolist()
    assert outputs["OUTPUT1"]["data"] == (a - b).ravel().tolist()


_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def metric_samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    """(name, labels, value) for every sample line of a Prometheus text exposition."""
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        assert match, f"not a Prometheus sample line: {line!r}"
        labels = dict(_LABEL.findall(match["labels"] or ""))
        samples.append((match["name"], labels, float(match["value"])))
    return samples


def metric_value(text: str, name: str, **labels: str) -> float:
    """The sum of the samples called ``name`` whose labels include ``labels`` (0 when none)."""
    return sum(
        value
        for sample, sample_labels, value in metric_samples(text)
        if sample == name and all(sample_labels.get(k) == v for k, v in labels.items())
    )


def model_stats(http: httpx.Client, model: str) -> dict[str, Any]:
    response = http.get(f"/v2/models/{model}/stats")
    assert response.status_code == 200, response.text
    (stats,) = response.json()["model_stats"]
    return stats  # type: ignore[no-any-return]
