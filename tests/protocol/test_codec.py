import json
import struct

import numpy as np
import orjson
import pytest

from tierserve.datatypes import BY_NAME
from tierserve.engine.request import InferResponse, OutputTensor
from tierserve.errors import InvalidInput
from tierserve.protocol.codec import decode_request, encode_response


def binary_body(header: dict[str, object], blob: bytes) -> tuple[bytes, str]:
    head = orjson.dumps(header)
    return head + blob, str(len(head))


def test_json_input_flat_and_nested_give_the_same_array() -> None:
    for data in ([1, 2, 3, 4], [[1, 2], [3, 4]]):
        body = orjson.dumps({"inputs": [{"name": "x", "shape": [2, 2], "datatype": "INT32", "data": data}]})
        (tensor,) = decode_request(body, None).inputs
        assert tensor.array.dtype == np.int32
        assert tensor.array.tolist() == [[1, 2], [3, 4]]


def test_binary_input_is_read_in_input_order() -> None:
    a = np.arange(4, dtype=np.float32)
    strings = b"".join(struct.pack("<I", len(s)) + s for s in (b"hi", b"\xc3\xb6"))
    header = {
        "inputs": [
            {"name": "a", "shape": [4], "datatype": "FP32", "parameters": {"binary_data_size": 16}},
            {
                "name": "s",
                "shape": [2],
                "datatype": "BYTES",
                "parameters": {"binary_data_size": len(strings)},
            },
        ]
    }
    body, length = binary_body(header, a.tobytes() + strings)
    first, second = decode_request(body, length).inputs
    assert first.array.tolist() == [0, 1, 2, 3]
    assert second.array.tolist() == [b"hi", b"\xc3\xb6"]


@pytest.mark.parametrize(
    ("data", "datatype", "message"),
    [
        ([1.5, 2.0], "INT32", "floating-point"),
        ([300, 1], "INT8", "out of range"),
        ([1, 0], "BOOL", "integers"),
        (["a", "b"], "FP32", "strings"),
        ([[1], [2, 3]], "INT32", "regular array"),
        ([1, 2, 3], "INT32", "values for shape"),
    ],
)
def test_json_data_that_does_not_fit_the_datatype_is_rejected(
    data: object, datatype: str, message: str
) -> None:
    body = orjson.dumps({"inputs": [{"name": "x", "shape": [2], "datatype": datatype, "data": data}]})
    with pytest.raises(InvalidInput, match=message):
        decode_request(body, None)


def test_header_length_past_the_body_is_rejected() -> None:
    with pytest.raises(InvalidInput, match="larger than the body"):
        decode_request(b"{}", "10")


def test_trailing_binary_bytes_are_rejected() -> None:
    header = {
        "inputs": [{"name": "a", "shape": [1], "datatype": "INT8", "parameters": {"binary_data_size": 1}}]
    }
    body, length = binary_body(header, b"\x01\x02")
    with pytest.raises(InvalidInput, match="belong to none"):
        decode_request(body, length)


def test_response_is_json_unless_an_output_is_binary() -> None:
    array = np.array([[1.5, 2.5]], dtype=np.float16)
    response = InferResponse("m", "1", [OutputTensor("y", BY_NAME["FP16"], array, binary=False)], id="7")
    body, headers = encode_response(response)
    assert headers == {"content-type": "application/json"}
    assert orjson.loads(body)["outputs"][0] == {
        "name": "y",
        "datatype": "FP16",
        "shape": [1, 2],
        "data": [1.5, 2.5],
    }
    assert orjson.loads(body)["id"] == "7"

    response.outputs[0].binary = True
    body, headers = encode_response(response)
    length = int(headers["inference-header-content-length"])
    assert orjson.loads(body[:length])["outputs"][0]["parameters"] == {"binary_data_size": 4}
    assert np.frombuffer(body[length:], dtype=np.float16).tolist() == [1.5, 2.5]


# -- Triton's JSON: NaN and infinities, nesting depth, shared memory and classification parameters


def test_nan_and_infinities_are_read_as_triton_writes_them() -> None:
    data = b"[NaN, Infinity, -Infinity, 1.5]"
    body = b'{"inputs": [{"name": "x", "shape": [4], "datatype": "FP32", "data": %s}]}' % data
    (tensor,) = decode_request(body, None).inputs
    assert np.isnan(tensor.array[0]) and tensor.array[1] == np.inf and tensor.array[2] == -np.inf
    assert tensor.array[3] == 1.5


def test_nan_is_still_refused_for_integers() -> None:
    body = b'{"inputs": [{"name": "x", "shape": [1], "datatype": "INT32", "data": [NaN]}]}'
    with pytest.raises(InvalidInput, match="not valid for datatype INT32"):
        decode_request(body, None)


def test_nan_and_infinities_are_written_as_tokens_not_null() -> None:
    values = np.array([[np.nan, np.inf], [-np.inf, 0.25]], dtype=np.float32)
    response = InferResponse(
        "m",
        "1",
        [
            OutputTensor("y", BY_NAME["FP32"], values, binary=False),
            OutputTensor("s", BY_NAME["BYTES"], np.array([b"null"], dtype=object), binary=False),
            OutputTensor("h", BY_NAME["FP16"], np.array([np.nan, 2.0], dtype=np.float16), binary=False),
        ],
        id="null",
    )
    content, headers = encode_response(response)
    assert headers["content-type"] == "application/json"
    assert b'"data":[NaN,Infinity,-Infinity,0.25]' in content
    doc = json.loads(content)  # what tritonclient does
    assert doc["id"] == "null" and doc["model_name"] == "m"
    y, s, h = doc["outputs"]
    assert np.isnan(y["data"][0]) and y["data"][1:3] == [np.inf, -np.inf] and y["shape"] == [2, 2]
    assert s["data"] == ["null"]
    assert np.isnan(h["data"][0]) and h["data"][1] == 2.0


def _nested(depth: int) -> object:
    data: object = "x"
    for _ in range(depth):
        data = [data]
    return data


def test_bytes_data_nests_at_most_100_deep() -> None:
    ok = orjson.dumps({"inputs": [{"name": "s", "shape": [1], "datatype": "BYTES", "data": _nested(100)}]})
    assert decode_request(ok, None).inputs[0].array.tolist() == [b"x"]
    deep = orjson.dumps({"inputs": [{"name": "s", "shape": [1], "datatype": "BYTES", "data": _nested(101)}]})
    with pytest.raises(InvalidInput, match=r"nesting depth exceeds the maximum allowed limit \(100\)"):
        decode_request(deep, None)


class _Regions:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def read(self, name: str, offset: int, size: int) -> bytes:
        assert name == "in"
        return self.data[offset : offset + size]


def test_an_input_is_read_from_its_shared_memory_region() -> None:
    values = np.arange(8, dtype=np.int32)
    body = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "shape": [1, 4],
                    "datatype": "INT32",
                    "parameters": {
                        "shared_memory_region": "in",
                        "shared_memory_byte_size": 16,
                        "shared_memory_offset": 16,
                    },
                }
            ],
            "outputs": [
                {"name": "y", "parameters": {"shared_memory_region": "out", "shared_memory_byte_size": 64}}
            ],
        }
    )
    request = decode_request(body, None, _Regions(values.tobytes()))
    assert request.inputs[0].array.tolist() == [[4, 5, 6, 7]]
    (output,) = request.outputs or []
    assert output.shared_memory == ("out", 0, 64)


@pytest.mark.parametrize(
    "parameters, message",
    [
        ({"shared_memory_region": "out", "shared_memory_byte_size": 4, "binary_data": True}, "binary_data"),
        (
            {"shared_memory_region": "out", "shared_memory_byte_size": 4, "classification": 2},
            "classification",
        ),
        ({"shared_memory_region": "out"}, "shared_memory_byte_size"),
        ({"classification": -1}, "classification"),
    ],
)
def test_conflicting_output_parameters_are_refused(parameters: dict[str, object], message: str) -> None:
    body = orjson.dumps(
        {
            "inputs": [{"name": "x", "shape": [1], "datatype": "INT32", "data": [1]}],
            "outputs": [{"name": "y", "parameters": parameters}],
        }
    )
    with pytest.raises(InvalidInput, match=message):
        decode_request(body, None)


def test_placed_outputs_carry_their_region_instead_of_data() -> None:
    response = InferResponse(
        "m", "1", [OutputTensor("y", BY_NAME["INT32"], np.arange(4, dtype=np.int32), True)]
    )
    placed = {"y": {"shared_memory_region": "out", "shared_memory_byte_size": 16}}
    content, headers = encode_response(response, placed)
    assert headers["content-type"] == "application/json"
    (output,) = orjson.loads(content)["outputs"]
    assert output == {"name": "y", "datatype": "INT32", "shape": [4], "parameters": placed["y"]}


def test_a_shape_of_more_dimensions_than_numpy_holds_is_a_400() -> None:
    body = orjson.dumps({"inputs": [{"name": "x", "shape": [1] * 40, "datatype": "INT32", "data": [1]}]})
    with pytest.raises(InvalidInput, match="at most 32 dimensions"):
        decode_request(body, None)
