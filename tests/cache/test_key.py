"""The cache key covers everything that changes an answer or who may see it, and nothing else."""

from __future__ import annotations

import numpy as np
import pytest

from tierserve.cache.key import (
    APPROX,
    EXACT,
    MAX_KEYED_INPUT_BYTES,
    KeyPrefix,
    cacheable,
    input_bytes,
    key_for,
    request_key,
)
from tierserve.datatypes import BY_NAME
from tierserve.engine.request import InferRequest, InputTensor, RequestedOutput

PREFIX = KeyPrefix.of(scope="acme", model="m", version=1, fingerprint=b"w1", generation=0)


def request(**changes: object) -> InferRequest:
    a = np.arange(6, dtype=np.int32).reshape(2, 3)
    b = np.ones((2, 3), dtype=np.int32)
    base = InferRequest(
        inputs=[InputTensor("A", BY_NAME["INT32"], a), InputTensor("B", BY_NAME["INT32"], b)],
        id="r1",
        parameters={},
    )
    for name, value in changes.items():
        setattr(base, name, value)
    return base


def key(req: InferRequest, prefix: KeyPrefix = PREFIX) -> bytes:
    return request_key(prefix, req)


def test_equal_requests_share_a_key_whatever_their_id_order_tier_or_encoding() -> None:
    first = request()
    second = request(
        id="another",
        inputs=list(reversed(request().inputs)),
        parameters={"tier": "gold", "priority": 1, "timeout": 5000, "binary_data_output": True},
        binary_output=True,
        tier="silver",
    )
    assert key(first) == key(second)
    assert len(key(first)) == 32


@pytest.mark.parametrize(
    "other",
    [
        KeyPrefix.of(scope="other-tenant", model="m", version=1, fingerprint=b"w1", generation=0),
        KeyPrefix.of(scope="*", model="m", version=1, fingerprint=b"w1", generation=0),
        KeyPrefix.of(scope="acme", model="m2", version=1, fingerprint=b"w1", generation=0),
        KeyPrefix.of(scope="acme", model="m", version=2, fingerprint=b"w1", generation=0),
        KeyPrefix.of(scope="acme", model="m", version=1, fingerprint=b"w2", generation=0),
        KeyPrefix.of(scope="acme", model="m", version=1, fingerprint=b"w1", generation=1),
    ],
    ids=["tenant", "shared", "model", "version", "weights", "generation"],
)
def test_scope_model_version_weights_and_generation_each_change_the_key(other: KeyPrefix) -> None:
    assert key(request(), other) != key(request())


def test_fields_cannot_run_into_each_other() -> None:
    """Length prefixes: ("ab", "c") and ("a", "bc") are different keys."""
    one = KeyPrefix.of(scope="ab", model="c", version=1, fingerprint=b"", generation=0)
    two = KeyPrefix.of(scope="a", model="bc", version=1, fingerprint=b"", generation=0)
    assert one != two


def test_every_input_property_changes_the_key() -> None:
    base = key(request())
    a, b = request().inputs
    flipped = a.array.copy()
    flipped[1, 2] += 1
    variants = [
        [InputTensor("A", a.datatype, flipped), b],  # one element
        [InputTensor("A", a.datatype, a.array.reshape(3, 2)), b],  # shape, same bytes
        [InputTensor("A", BY_NAME["UINT32"], a.array.view(np.uint32)), b],  # datatype, same bytes
        [InputTensor("C", a.datatype, a.array), b],  # name
        [a],  # one input fewer
    ]
    keys = {key(request(inputs=inputs)) for inputs in variants}
    assert base not in keys and len(keys) == len(variants)


def test_requested_outputs_and_output_changing_parameters_change_the_key() -> None:
    base = key(request())
    only_out0 = key(request(outputs=[RequestedOutput("OUTPUT0")]))
    assert only_out0 != base
    # the binary flag of an output only changes the encoding of the response
    assert key(request(outputs=[RequestedOutput("OUTPUT0", binary=True)])) == only_out0
    assert key(request(outputs=[RequestedOutput("OUTPUT0"), RequestedOutput("OUTPUT1")])) != only_out0
    assert key(request(parameters={"top_k": 3})) != base
    assert key(request(parameters={"top_k": 3})) != key(request(parameters={"top_k": 4}))


def test_bytes_tensors_are_keyed_element_by_element() -> None:
    def of(*items: bytes) -> bytes:
        array = np.empty(len(items), dtype=object)
        array[:] = list(items)
        return key(request(inputs=[InputTensor("T", BY_NAME["BYTES"], array)]))

    assert of(b"ab", b"c") != of(b"a", b"bc")
    assert of(b"ab", b"c") == of(b"ab", b"c")


def test_empty_and_scalar_tensors_hash() -> None:
    empty = InputTensor("A", BY_NAME["FP32"], np.zeros((0, 3), dtype=np.float32))
    scalar = InputTensor("A", BY_NAME["FP32"], np.array(1.5, dtype=np.float32))
    assert key(request(inputs=[empty])) != key(request(inputs=[scalar]))


def test_non_contiguous_and_contiguous_views_of_equal_values_share_a_key() -> None:
    values = np.arange(12, dtype=np.float32).reshape(3, 4)
    transposed_back = np.ascontiguousarray(values.T).T  # same values, Fortran order
    one = key(request(inputs=[InputTensor("A", BY_NAME["FP32"], values)]))
    two = key(request(inputs=[InputTensor("A", BY_NAME["FP32"], transposed_back)]))
    assert one == two


def test_precision_classes_have_distinct_keys() -> None:
    digest = key(request())
    assert key_for(digest, EXACT) != key_for(digest, APPROX)
    assert key_for(digest, EXACT) == key_for(key(request()), EXACT)


@pytest.mark.parametrize(
    ("parameters", "expected"),
    [
        ({}, True),
        ({"tier": "gold"}, True),
        ({"cache": False}, False),
        ({"cache": True}, True),
        ({"sequence_id": 7}, False),
        ({"sequence_id": 0}, True),
        ({"sequence_start": True}, False),
    ],
)
def test_cacheable(parameters: dict[str, object], expected: bool) -> None:
    assert cacheable(request(parameters=parameters)) is expected


def test_input_bytes_tells_requests_too_large_to_key() -> None:
    assert input_bytes(request()) == 2 * 6 * 4
    big = InputTensor("A", BY_NAME["UINT8"], np.zeros(MAX_KEYED_INPUT_BYTES + 1, dtype=np.uint8))
    assert input_bytes(request(inputs=[big])) > MAX_KEYED_INPUT_BYTES
