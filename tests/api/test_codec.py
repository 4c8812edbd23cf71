import struct

import numpy as np
import orjson
import pytest

from tierserve.api.codec import decode_request, encode_response
from tierserve.datatypes import BY_NAME
from tierserve.engine.request import InferResponse, OutputTensor
from tierserve.errors import InvalidInput


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
