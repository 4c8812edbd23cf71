"""Inference messages to the engine's request and back, without a server."""

from __future__ import annotations

import re

import numpy as np
import pytest

from tierserve.datatypes import from_name
from tierserve.engine.request import InferResponse, OutputTensor
from tierserve.errors import InvalidInput
from tierserve.grpc_api import messages
from tierserve.grpc_api.tensors import decode_request, encode_response


def request(**fields: object) -> object:
    return messages.ModelInferRequest(model_name="m", **fields)


def test_raw_inputs_parameters_and_requested_outputs() -> None:
    message = request(id="r", raw_input_contents=[np.arange(4, dtype=np.int32).tobytes()])
    message.inputs.add(name="X", datatype="INT32", shape=[2, 2])
    message.outputs.add(name="Y")
    message.parameters["tier"].string_param = "gold"
    message.parameters["priority"].uint64_param = 2
    message.parameters["timeout"].int64_param = 5000
    decoded = decode_request(message)
    assert decoded.id == "r"
    np.testing.assert_array_equal(decoded.inputs[0].array, [[0, 1], [2, 3]])
    assert decoded.parameters == {"tier": "gold", "priority": 2, "timeout": 5000}
    assert [o.name for o in decoded.outputs or []] == ["Y"]


def test_typed_contents_by_datatype() -> None:
    message = request()
    message.inputs.add(name="A", datatype="UINT16", shape=[2]).contents.uint_contents.extend([0, 65535])
    message.inputs.add(name="B", datatype="BOOL", shape=[1]).contents.bool_contents.append(True)
    message.inputs.add(name="C", datatype="BYTES", shape=[1, 1]).contents.bytes_contents.append(b"hi")
    a, b, c = (t.array for t in decode_request(message).inputs)
    assert a.dtype == np.uint16 and a.tolist() == [0, 65535]
    assert b.dtype == np.bool_ and b.tolist() == [True]
    assert c.shape == (1, 1) and c[0, 0] == b"hi"


@pytest.mark.parametrize(
    ("datatype", "field", "values", "message"),
    [
        ("UINT8", "uint_contents", [256], "out of range"),
        ("INT16", "int_contents", [-40000], "out of range"),
        ("FP32", "fp32_contents", [1.0, 2.0], "2 values in fp32_contents for shape [1]"),
        ("FP16", "fp32_contents", [1.0], "must be sent in raw_input_contents"),
        ("NOPE", "fp32_contents", [1.0], "NOPE"),
    ],
)
def test_bad_typed_contents(datatype: str, field: str, values: list[object], message: str) -> None:
    bad = request()
    getattr(bad.inputs.add(name="A", datatype=datatype, shape=[1]).contents, field).extend(values)
    with pytest.raises(InvalidInput, match=re.escape(message)):
        decode_request(bad)


def test_bad_requests() -> None:
    with pytest.raises(InvalidInput, match="at least one input"):
        decode_request(request())
    both = request(raw_input_contents=[b"\x00" * 4])
    both.inputs.add(name="A", datatype="FP32", shape=[1]).contents.fp32_contents.append(1.0)
    with pytest.raises(InvalidInput, match="both typed contents and raw_input_contents"):
        decode_request(both)
    shared = request()
    shared.inputs.add(name="A", datatype="FP32", shape=[1]).parameters[
        "shared_memory_region"
    ].string_param = "r"
    with pytest.raises(InvalidInput, match="shared-memory"):
        decode_request(shared)
    negative = request(raw_input_contents=[b""])
    negative.inputs.add(name="A", datatype="FP32", shape=[-1])
    with pytest.raises(InvalidInput, match="negative"):
        decode_request(negative)


def test_outputs_go_back_raw_in_order() -> None:
    response = InferResponse(
        "m",
        "1",
        [
            OutputTensor("Y", from_name("FP16"), np.array([[1.5, 2.0]], dtype=np.float16), False),
            OutputTensor("S", from_name("BYTES"), np.array([b"ab"], dtype=object), False),
        ],
        id="r",
    )
    message = encode_response(response)
    assert (message.model_name, message.model_version, message.id) == ("m", "1", "r")
    assert [(o.name, o.datatype, list(o.shape)) for o in message.outputs] == [
        ("Y", "FP16", [1, 2]),
        ("S", "BYTES", [1]),
    ]
    assert np.frombuffer(message.raw_output_contents[0], dtype=np.float16).tolist() == [1.5, 2.0]
    assert message.raw_output_contents[1] == b"\x02\x00\x00\x00ab"
