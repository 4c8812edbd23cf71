"""The client's directions meet the server's: what ``client.encode_request`` writes,
``codec.decode_request`` reads back unchanged, and what ``codec.encode_response`` writes,
``client.decode_response`` reads back unchanged, JSON and binary alike."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from tierserve.datatypes import BY_NAME
from tierserve.engine.request import InferResponse, OutputTensor
from tierserve.errors import InvalidInput
from tierserve.protocol.client import NotJson, decode_response, encode_request
from tierserve.protocol.codec import decode_request, encode_response
from tierserve.protocol.tensors import HEADER_LENGTH

TENSORS = [
    ("f", BY_NAME["FP32"], np.array([[0.5, -2.0], [np.nan, 3.25]], dtype=np.float32)),
    ("h", BY_NAME["FP16"], np.array([1.5, 2.5], dtype=np.float16)),
    ("i", BY_NAME["INT64"], np.array([[-(2**40)], [7]], dtype=np.int64)),
    ("b", BY_NAME["BOOL"], np.array([True, False])),
    ("s", BY_NAME["BYTES"], np.array([b"hi", "\u00f6".encode()], dtype=object)),
]


def same(left: np.ndarray, right: np.ndarray) -> bool:
    if left.dtype == object:
        return left.shape == right.shape and left.tolist() == right.tolist()
    return left.dtype == right.dtype and np.array_equal(left, right, equal_nan=left.dtype.kind == "f")


@pytest.mark.parametrize("binary", [False, True])
def test_a_request_the_client_writes_is_the_request_the_server_reads(binary: bool) -> None:
    # NaN travels in binary; plain JSON (for peers that read no NaN token) writes it as null.
    inputs = TENSORS if binary else TENSORS[1:]
    body, headers = encode_request(inputs, binary=binary)
    request = decode_request(body, headers.get(HEADER_LENGTH))
    assert [t.name for t in request.inputs] == [name for name, _, _ in inputs]
    for tensor, (_, datatype, array) in zip(request.inputs, inputs, strict=True):
        assert tensor.datatype == datatype
        assert same(tensor.array, array), tensor.name
    assert request.binary_output is binary  # the answer comes back the way the request went


@pytest.mark.parametrize("binary", [False, True])
def test_a_response_the_server_writes_is_the_response_the_client_reads(binary: bool) -> None:
    values = [*TENSORS, ("x", BY_NAME["FP64"], np.array([np.inf, -np.inf, 0.0]))]
    outputs = [OutputTensor(name, datatype, array, binary) for name, datatype, array in values]
    body, headers = encode_response(InferResponse("m", "1", outputs))
    decoded = decode_response(body, headers.get(HEADER_LENGTH))
    assert list(decoded) == [name for name, _, _ in values]
    for name, _, array in values:
        assert same(decoded[name], array), name


def test_json_refuses_what_it_would_change_and_binary_carries_it() -> None:
    (nan,) = orjson.loads(encode_request(TENSORS[:1], binary=False)[0])["inputs"]
    assert nan["data"] == [0.5, -2.0, None, 3.25]  # plain JSON, as MLServer's orjson reads it
    infinite = [("x", BY_NAME["FP32"], np.array([1.0, np.inf], dtype=np.float32))]
    with pytest.raises(NotJson, match="infinities"):
        encode_request(infinite, binary=False)
    not_text = [("s", BY_NAME["BYTES"], np.array([b"\xff"], dtype=object))]
    with pytest.raises(NotJson, match="not UTF-8"):
        encode_request(not_text, binary=False)
    for inputs in (infinite, not_text):
        body, headers = encode_request(inputs, binary=True)
        (tensor,) = decode_request(body, headers[HEADER_LENGTH]).inputs
        assert same(tensor.array, inputs[0][2])


def test_a_response_that_is_not_one_is_refused_naming_the_output() -> None:
    short = {"outputs": [{"name": "y", "datatype": "FP32", "shape": [2], "data": [1.0]}]}
    with pytest.raises(InvalidInput, match="output 'y': 1 values for shape"):
        decode_response(orjson.dumps(short), None)
    head = orjson.dumps(
        {"outputs": [{"name": "y", "datatype": "INT8", "shape": [1], "parameters": {"binary_data_size": 1}}]}
    )
    with pytest.raises(InvalidInput, match="follow the outputs"):
        decode_response(head + b"\x01\x02", str(len(head)))
    with pytest.raises(InvalidInput, match="response JSON"):
        decode_response(b"<html>", None)
