"""Raw binary requests: the model's single input deduced from the body's length."""

from __future__ import annotations

import numpy as np
import pytest

from tierserve.api.raw_binary import decode_raw_request
from tierserve.datatypes import BY_NAME
from tierserve.errors import InvalidInput
from tierserve.repository.signature import Signature, TensorSpec


def _signature(*inputs: tuple[str, str, tuple[int, ...]]) -> Signature:
    specs = tuple(TensorSpec(name, BY_NAME[datatype], shape) for name, datatype, shape in inputs)
    return Signature(specs, (TensorSpec("OUTPUT0", BY_NAME["FP32"], (-1, -1)),))


def test_the_variable_dimension_follows_from_the_length() -> None:
    body = np.arange(8, dtype=np.float32).tobytes()
    request = decode_raw_request(body, _signature(("INPUT0", "FP32", (-1, -1))), 8, "m")
    (tensor,) = request.inputs
    assert tensor.name == "INPUT0" and tensor.array.shape == (1, 8)
    assert tensor.array.tolist() == [list(range(8))]
    assert request.binary_output and request.outputs is None


def test_fixed_dims_without_batching() -> None:
    body = np.arange(6, dtype=np.int32).tobytes()
    request = decode_raw_request(body, _signature(("x", "INT32", (-1, 3))), 0, "m")
    assert request.inputs[0].array.tolist() == [[0, 1, 2], [3, 4, 5]]


def test_a_bytes_input_is_the_whole_body() -> None:
    request = decode_raw_request(b"427", _signature(("INPUT0", "BYTES", (-1, 1))), 8, "m")
    assert request.inputs[0].array.tolist() == [[b"427"]]


@pytest.mark.parametrize(
    "inputs, body, message",
    [
        ((("a", "FP32", (-1, 4)), ("b", "FP32", (-1, 4))), b"\0" * 16, "must only have 1 input"),
        ((("a", "FP16", (-1, -1, -1)),), b"\0" * 8, "more than one variable-sized dimension"),
        ((("a", "BYTES", (-1, 3)),), b"abc", "must have input shape \\[1\\]"),
        ((("a", "FP32", (-1, 3)),), b"\0" * 8, "do not fill whole FP32 elements"),
        ((("a", "FP32", (-1, -1)),), b"\0" * 7, "do not fill whole FP32 elements"),
    ],
)
def test_models_whose_input_cannot_be_deduced_are_400(
    inputs: tuple[tuple[str, str, tuple[int, ...]], ...], body: bytes, message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        decode_raw_request(body, _signature(*inputs), 8, "m")
