"""Cached answers: copied, read-only, and the same after a round trip through Redis's bytes."""

from __future__ import annotations

import numpy as np
import pytest

from tierserve.cache.answer import Answer, CorruptEntry
from tierserve.datatypes import BY_NAME
from tierserve.engine.request import InferRequest, InferResponse, OutputTensor, RequestedOutput


def response() -> InferResponse:
    text = np.empty((2, 1), dtype=object)
    text[:] = [[b"caf\xc3\xa9"], [b""]]
    return InferResponse(
        model_name="m",
        model_version="1",
        id="leader",
        outputs=[
            OutputTensor("EMB", BY_NAME["FP32"], np.arange(6, dtype=np.float32).reshape(2, 3), True),
            OutputTensor("TXT", BY_NAME["BYTES"], text, False),
            OutputTensor("FLAG", BY_NAME["BOOL"], np.array([True, False]), False),
        ],
    )


def test_round_trip_through_bytes() -> None:
    answer = Answer.of(response())
    again = Answer.decode(answer.encode())
    assert [(n, d.name, a.shape) for n, d, a in again.outputs] == [
        (n, d.name, a.shape) for n, d, a in answer.outputs
    ]
    for (_, _, a), (_, _, b) in zip(answer.outputs, again.outputs, strict=True):
        assert np.array_equal(a, b)
    assert again.nbytes == answer.nbytes


def test_arrays_are_copies_and_read_only() -> None:
    original = response()
    answer = Answer.of(original)
    original.outputs[0].array[0, 0] = 99.0
    _, _, emb = answer.outputs[0]
    assert emb[0, 0] == 0.0
    with pytest.raises(ValueError):
        emb[0, 0] = 1.0


def test_a_response_follows_the_request_order_encoding_and_id() -> None:
    answer = Answer.of(response())
    request = InferRequest(
        inputs=[], id="follower", outputs=[RequestedOutput("TXT", binary=True), RequestedOutput("EMB")]
    )
    built = answer.response(request, "m", 1)
    assert built.id == "follower" and built.model_version == "1"
    assert [(t.name, t.binary) for t in built.outputs] == [("TXT", True), ("EMB", False)]
    every = answer.response(InferRequest(inputs=[], binary_output=True), "m", 1)
    assert [(t.name, t.binary) for t in every.outputs] == [("EMB", True), ("TXT", True), ("FLAG", True)]


@pytest.mark.parametrize("damage", [b"", b"nope", b"TSC1\x05\x00\x00\x00", "truncate", "trail"])
def test_damaged_bytes_are_refused(damage: bytes | str) -> None:
    good = Answer.of(response()).encode()
    raw = good[:-3] if damage == "truncate" else good + b"x" if damage == "trail" else damage
    assert isinstance(raw, bytes)
    with pytest.raises(CorruptEntry):
        Answer.decode(raw)


def test_an_answer_for_followers_only_shares_the_arrays() -> None:
    original = response()
    shared = Answer.of(original, copy=False)
    assert shared.outputs[0][2] is original.outputs[0].array
    assert shared.nbytes == Answer.of(original).nbytes
