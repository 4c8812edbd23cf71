"""A batch that runs alone takes the pool's wide session; batches that overlap take their own."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from tierserve.backends.wide import Widening, WideWhenAlone, own_session, sessions
from tierserve.repository.signature import Signature


class Recording:
    """A backend that records its runs and can hold one until told to finish."""

    kind = "onnx-cpu"
    signature = Signature((), ())

    def __init__(self, name: str) -> None:
        self.name = name
        self.runs = 0
        self.closed = False
        self.started = threading.Event()
        self.release = threading.Event()
        self.release.set()

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.runs += 1
        self.started.set()
        assert self.release.wait(30)
        return {"ran_on": np.array(self.name)}

    def available(self) -> bool:
        return True

    def close(self) -> None:
        self.closed = True


def test_alone_runs_wide_and_overlapping_batches_run_on_their_own_sessions() -> None:
    wide, own_a, own_b = Recording("wide"), Recording("a"), Recording("b")
    widening = Widening(wide)
    a, b = WideWhenAlone(own_a, widening), WideWhenAlone(own_b, widening)
    assert str(a.run({})["ran_on"]) == "wide"  # alone: every core
    assert str(b.run({})["ran_on"]) == "wide"  # one after the other: each alone

    wide.release.clear()  # a's next batch holds the wide session...
    wide.started.clear()
    results: dict[str, str] = {}
    running = threading.Thread(target=lambda: results.update(a=str(a.run({})["ran_on"])))
    running.start()
    assert wide.started.wait(30)
    assert str(b.run({})["ran_on"]) == "b"  # ...so b's overlapping batch runs on its own session
    wide.release.set()
    running.join(30)
    assert results == {"a": "wide"}
    assert (wide.runs, own_a.runs, own_b.runs) == (3, 0, 1)
    assert (a.wide_batches, b.wide_batches) == (2, 1)
    assert widening.running == 0 and not widening.wide_busy


def test_a_failed_batch_gives_the_wide_session_back() -> None:
    class Failing(Recording):
        def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            raise RuntimeError("boom")

    widening = Widening(Failing("wide"))
    replica = WideWhenAlone(Recording("own"), widening)
    with pytest.raises(RuntimeError):
        replica.run({})
    assert widening.running == 0 and not widening.wide_busy


def test_the_wide_session_closes_with_the_last_replica() -> None:
    wide = Recording("wide")
    widening = Widening(wide)
    a, b = WideWhenAlone(Recording("a"), widening), WideWhenAlone(Recording("b"), widening)
    a.close()
    assert not wide.closed
    b.close()
    assert wide.closed


def test_profiles_and_warm_up_see_each_session() -> None:
    wide, own_a, own_b, plain = Recording("wide"), Recording("a"), Recording("b"), Recording("plain")
    widening = Widening(wide)
    a, b = WideWhenAlone(own_a, widening), WideWhenAlone(own_b, widening)
    assert own_session(a) is own_a and own_session(plain) is plain
    assert sessions([a, b]) == [own_a, wide, own_b]
    assert sessions([plain, plain]) == [plain]
