"""Zero-downtime swaps in the engine, deterministically: a request that looked a version up before a
swap is served, and the old version stops only once the requests inside it are answered."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from support.engines import simple_engine
from tierserve.datatypes import from_name
from tierserve.engine.engine import Engine
from tierserve.engine.request import InferRequest, InputTensor
from tierserve.errors import ModelNotFound
from tierserve.examples.basic import build_simple


def _request() -> InferRequest:
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    int32 = from_name("INT32")
    return InferRequest([InputTensor("INPUT0", int32, a), InputTensor("INPUT1", int32, np.ones_like(a))])


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    with simple_engine(tmp_path, (1,), "instances: 1\n") as built:  # version_policy: latest
        yield built


def test_a_request_holding_a_version_that_went_away_is_served(engine: Engine, tmp_path: Path) -> None:
    stale = engine.deployment("m")  # looked up, then the body is read ... meanwhile version 2 arrives
    build_simple(tmp_path / "models" / "m" / "2" / "model.onnx")
    engine.load("m")  # version 1 drains (nothing inside it) and stops
    assert engine.versions("m") == [2]
    # it named no version: the model's current version answers (before the fix: 503 "unloading")
    response = asyncio.run(engine.infer(stale, _request(), pinned=False))
    assert response.model_version == "2"
    # it named version 1, which is gone: a clear 404, not a failure inside the engine
    with pytest.raises(ModelNotFound):
        asyncio.run(engine.infer(stale, _request(), pinned=True))


def test_the_old_version_stops_only_after_the_requests_inside_it(engine: Engine, tmp_path: Path) -> None:
    inside = engine.deployment("m")
    assert inside.enter()  # a request is inside version 1
    build_simple(tmp_path / "models" / "m" / "2" / "model.onnx")
    swap = threading.Thread(target=engine.load, args=("m",))
    swap.start()
    try:
        # version 2 takes new requests while version 1 waits for the one inside it
        deadline = 60.0
        while engine.versions("m") != [2]:
            swap.join(0.01)
            deadline -= 0.01
            assert deadline > 0, "version 2 never took over"
        assert swap.is_alive()  # blocked in the drain: version 1 is not stopped under its request
        # the request inside is served by version 1, whose replicas still run
        response = asyncio.run(engine.infer(inside, _request()))
        assert response.model_version == "1"
    finally:
        inside.leave()
        swap.join(60.0)
    assert not swap.is_alive()
    assert not inside.enter()  # drained and closed
