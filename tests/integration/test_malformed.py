"""Malformed and invalid requests over raw HTTP: each is a 4xx with ``{"error": <clear message>}`` as
``application/json``, and the server keeps serving valid requests afterwards."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from support.server import RunningServer, start_server
from support.v2 import assert_json_error, assert_serves_simple, simple_json_request, simple_rows

pytestmark = pytest.mark.integration

HEADER = "Inference-Header-Content-Length"


@dataclass
class Case:
    """One bad request: where it goes, its body and headers, and what the error must say."""

    body: bytes
    expect: str  # a fragment of the error message (case-insensitive)
    model: str = "simple"
    headers: dict[str, str] = field(default_factory=dict)
    status: int = 400


def _json(doc: Any, expect: str, model: str = "simple") -> Case:
    return Case(json.dumps(doc).encode(), expect, model, {"Content-Type": "application/json"})


def _simple(expect: str, **changes: Any) -> Case:
    """A valid ``simple`` request with ``changes`` applied to INPUT0 (``None`` deletes a key)."""
    a, b = simple_rows()
    doc = simple_json_request(a, b)
    for key, value in changes.items():
        if value is None:
            doc["inputs"][0].pop(key)
        else:
            doc["inputs"][0][key] = value
    return _json(doc, expect)


def _binary(
    inputs: list[dict[str, Any]],
    blobs: list[bytes],
    expect: str,
    *,
    header_length: str | None = None,
    trailing: bytes = b"",
    model: str = "simple",
) -> Case:
    """Triton's binary tensor extension: JSON header, then the raw tensors."""
    header = json.dumps({"inputs": inputs}).encode()
    headers = {
        "Content-Type": "application/octet-stream",
        HEADER: str(len(header)) if header_length is None else header_length,
    }
    return Case(header + b"".join(blobs) + trailing, expect, model, headers)


def _int32_binary(name: str, size: object) -> dict[str, Any]:
    return {"name": name, "datatype": "INT32", "shape": [1, 16], "parameters": {"binary_data_size": size}}


_ROW = np.arange(16, dtype="<i4").reshape(1, 16).tobytes()
_INPUTS = [_int32_binary("INPUT0", 64), _int32_binary("INPUT1", 64)]


def _two_rows_ragged() -> list[list[int]]:
    return [list(range(16)), list(range(15))]


CASES: dict[str, Case] = {
    # The body as a whole.
    "invalid_json": Case(b'{"inputs": [', "JSON"),
    "empty_body": Case(b"", "JSON"),
    "body_is_an_array": _json([1, 2, 3], "JSON object"),
    "body_is_a_string": _json("inputs", "JSON object"),
    "no_inputs_key": _json({"id": "x"}, "inputs"),
    "empty_inputs": _json({"inputs": []}, "inputs"),
    "inputs_not_an_array": _json({"inputs": {"name": "INPUT0"}}, "inputs"),
    "input_not_an_object": _json({"inputs": [1, 2]}, "input"),
    "id_not_a_string": _json({**simple_json_request(*simple_rows()), "id": 7}, "id"),
    "parameters_not_an_object": _json(
        {**simple_json_request(*simple_rows()), "parameters": [1]}, "parameters"
    ),
    "unknown_tier": _json(
        {**simple_json_request(*simple_rows()), "parameters": {"tier": "platinum"}}, "tier"
    ),
    # Tensors against their own declaration.
    "shape_and_data_count_differ": _simple("15 values", data=list(range(15))),
    "missing_shape": _simple("shape", shape=None),
    "negative_dimension": _simple("shape", shape=[-1, 16]),
    "missing_data": _simple("data", data=None),
    "unknown_datatype": _simple("FLOAT32", datatype="FLOAT32"),
    "missing_datatype": _simple("datatype", datatype=None),
    "float_data_for_int32": _simple("floating-point", data=[0.5] * 16),
    "string_data_for_int32": _simple("strings", data=["1"] * 16),
    "boolean_data_for_int32": _simple("booleans", data=[True] * 16),
    "null_data": _simple("INT32", data=[None] * 16),
    "ragged_nested_data": _simple("regular", shape=[2, 16], data=_two_rows_ragged()),
    "out_of_range_for_int8": _json(
        {"inputs": [{"name": "INPUT0", "datatype": "INT8", "shape": [1, 2], "data": [1, 300]}]},
        "out of range",
        model="identity_int8",
    ),
    "negative_for_uint8": _json(
        {"inputs": [{"name": "INPUT0", "datatype": "UINT8", "shape": [1, 2], "data": [-1, 3]}]},
        "out of range",
        model="identity_uint8",
    ),
    "number_for_bytes": _json(
        {"inputs": [{"name": "INPUT0", "datatype": "BYTES", "shape": [1, 2], "data": ["a", 1]}]},
        "BYTES",
        model="identity_bytes",
    ),
    # Tensors against the model.
    "wrong_datatype_for_model": _simple("expects INT32", datatype="FP32", data=[0.5] * 16),
    "unknown_input_name": _simple("INPUT9", name="INPUT9"),
    "missing_input": _json({"inputs": simple_json_request(*simple_rows())["inputs"][1:]}, "INPUT0"),
    "duplicate_input": _json({"inputs": simple_json_request(*simple_rows())["inputs"] * 2}, "more than once"),
    "wrong_rank": _simple("shape", shape=[1, 1, 16]),
    "wrong_inner_dimension": _simple("shape", shape=[2, 8]),
    "batch_larger_than_max_batch_size": _json(simple_json_request(*simple_rows(9)), "batch size 9"),
    "empty_batch": _json(simple_json_request(*simple_rows(0)), "batch size 0"),
    "inputs_disagree_on_batch_size": _json(
        {
            "inputs": [
                simple_json_request(*simple_rows(1))["inputs"][0],
                simple_json_request(*simple_rows(2))["inputs"][1],
            ]
        },
        "batch size",
    ),
    "unknown_requested_output": _json(
        {**simple_json_request(*simple_rows()), "outputs": [{"name": "OUTPUT9"}]}, "OUTPUT9"
    ),
    "outputs_not_an_array": _json(
        {**simple_json_request(*simple_rows()), "outputs": {"name": "OUTPUT0"}}, "outputs"
    ),
    "output_without_name": _json(
        {**simple_json_request(*simple_rows()), "outputs": [{"nom": "OUTPUT0"}]}, "name"
    ),
    # Binary tensor extension.
    "header_length_larger_than_body": _binary(
        _INPUTS, [_ROW, _ROW], "larger than the body", header_length="100000"
    ),
    "header_length_not_an_integer": _binary(_INPUTS, [_ROW, _ROW], "integer", header_length="twelve"),
    "header_length_negative": _binary(_INPUTS, [_ROW, _ROW], HEADER, header_length="-5"),
    "header_length_cuts_the_json": _binary(_INPUTS, [_ROW, _ROW], "JSON", header_length="10"),
    "binary_size_larger_than_remaining": _binary(
        [_int32_binary("INPUT0", 64), _int32_binary("INPUT1", 128)], [_ROW, _ROW], "binary_data_size"
    ),
    "binary_size_not_matching_shape": _binary(
        [_int32_binary("INPUT0", 60), _int32_binary("INPUT1", 68)], [_ROW, _ROW], "binary_data_size"
    ),
    "binary_size_not_an_integer": _binary(
        [_int32_binary("INPUT0", "64"), _int32_binary("INPUT1", 64)],
        [_ROW, _ROW],
        "binary_data_size",
    ),
    "trailing_bytes_after_binary_inputs": _binary(_INPUTS, [_ROW, _ROW], "2 bytes", trailing=b"\x00\x01"),
    "binary_input_without_binary_part": _json({"inputs": _INPUTS}, "binary_data_size"),
    "binary_size_and_json_data": _binary(
        [{**_int32_binary("INPUT0", 64), "data": list(range(16))}, _int32_binary("INPUT1", 64)],
        [_ROW, _ROW],
        "both",
    ),
    "bool_byte_not_zero_or_one": _binary(
        [{"name": "INPUT0", "datatype": "BOOL", "shape": [1, 2], "parameters": {"binary_data_size": 2}}],
        [b"\x01\x02"],
        "BOOL",
        model="identity_bool",
    ),
    "truncated_bytes_element": _binary(
        [{"name": "INPUT0", "datatype": "BYTES", "shape": [1, 1], "parameters": {"binary_data_size": 7}}],
        [struct.pack("<I", 5) + b"abc"],
        "BYTES",
        model="identity_bytes",
    ),
    "bytes_element_count_not_matching_shape": _binary(
        [{"name": "INPUT0", "datatype": "BYTES", "shape": [1, 2], "parameters": {"binary_data_size": 5}}],
        [struct.pack("<I", 1) + b"a"],
        "BYTES",
        model="identity_bytes",
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_malformed_request_is_a_clear_4xx(http: httpx.Client, case: Case) -> None:
    response = http.post(f"/v2/models/{case.model}/infer", content=case.body, headers=case.headers)
    message = assert_json_error(response, case.status)
    assert case.expect.lower() in message.lower(), message
    assert_serves_simple(http)


def test_ragged_nested_bytes_data_is_rejected(http: httpx.Client) -> None:
    request = {
        "inputs": [{"name": "INPUT0", "datatype": "BYTES", "shape": [2, 2], "data": [["a", "b", "c"], ["d"]]}]
    }
    response = http.post("/v2/models/identity_bytes/infer", json=request)
    assert_json_error(response, 400)
    assert_serves_simple(http)


def test_unknown_model_with_malformed_body_is_404(http: httpx.Client) -> None:
    response = http.post("/v2/models/no_such_model/infer", content=b"{not json")
    assert_json_error(response, 404)
    assert_serves_simple(http)


def test_invalid_repository_index_body(http: httpx.Client) -> None:
    assert_json_error(http.post("/v2/repository/index", content=b"[1]"), 400)
    assert_json_error(http.post("/v2/repository/index", content=b"{oops"), 400)
    assert_serves_simple(http)


def test_load_with_a_malformed_config_override_is_rejected(http: httpx.Client) -> None:
    """Overrides themselves work (tests/integration/test_triton_repository.py); a broken one is a 400
    and what serves keeps serving."""
    response = http.post("/v2/repository/models/simple/load", json={"parameters": {"config": "{max_batch"}})
    assert_json_error(response, 400)
    assert_serves_simple(http)


# -- body size limit ---------------------------------------------------------------------------

LIMIT = 4096


@pytest.fixture(scope="module")
def small_server(example_repo: Path) -> Iterator[RunningServer]:
    with start_server(example_repo, extra_args=["--max-body-bytes", str(LIMIT)]) as running:
        yield running


@pytest.fixture
def small_http(small_server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=small_server.base_url, timeout=30.0) as raw:
        yield raw


def _oversized_request() -> bytes:
    a, b = simple_rows(8)
    body = json.dumps(simple_json_request(a, b, id="x" * (4 * LIMIT))).encode()
    assert len(body) > LIMIT
    return body


def test_body_over_the_limit_is_413(small_http: httpx.Client) -> None:
    response = small_http.post("/v2/models/simple/infer", content=_oversized_request())
    message = assert_json_error(response, 413)
    assert str(LIMIT) in message
    assert_serves_simple(small_http)


def test_chunked_body_over_the_limit_is_413(small_http: httpx.Client) -> None:
    body = _oversized_request()
    chunks = (body[i : i + 1024] for i in range(0, len(body), 1024))  # no Content-Length: chunked
    response = small_http.post("/v2/models/simple/infer", content=chunks)
    assert_json_error(response, 413)
    assert_serves_simple(small_http)


def test_body_under_the_limit_is_served(small_http: httpx.Client) -> None:
    a, b = simple_rows(2)
    body = json.dumps(simple_json_request(a, b)).encode()
    assert len(body) <= LIMIT
    response = small_http.post("/v2/models/simple/infer", content=body)
    assert response.status_code == 200, response.text
