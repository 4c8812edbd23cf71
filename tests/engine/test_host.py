"""The host's cores: a batch holds cores while it runs; freed cores go to the best tier waiting."""

from __future__ import annotations

import threading
import time

from tierserve.engine.host import HostCores


def _wait_for(condition: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


def test_freed_cores_go_to_the_best_tier_waiting_not_the_first() -> None:
    host = HostCores(1)
    order: list[str] = []
    release = threading.Event()

    def run(name: str, priority: int, hold: threading.Event | None = None) -> None:
        with host.hold(1, priority):
            order.append(name)
            if hold is not None:
                hold.wait(10)

    first = threading.Thread(target=run, args=("running bronze", 2, release))
    first.start()
    _wait_for(lambda: order == ["running bronze"])
    bronze = threading.Thread(target=run, args=("queued bronze", 2))
    bronze.start()
    _wait_for(lambda: len(host._waiting) == 1)
    gold = threading.Thread(target=run, args=("gold", 0))
    gold.start()
    _wait_for(lambda: len(host._waiting) == 2)
    release.set()
    for t in (first, bronze, gold):
        t.join(10)
    assert order == ["running bronze", "gold", "queued bronze"]
    assert host.free == 1


def test_a_replica_holds_as_many_cores_as_it_has_threads_capped_at_the_host() -> None:
    host = HostCores(2)
    with host.hold(2, 0):
        assert host.free == 0
    with host.hold(8, 0):  # more threads than cores: it takes them all, and does not wait forever
        assert host.free == 0
    assert host.free == 2


def test_predictions_see_when_a_core_frees_up() -> None:
    host = HostCores(2)
    assert host.earliest_free() == float("-inf")  # a core is free now
    with host.hold(1, 2, until=5.0), host.hold(1, 0, until=3.0):
        assert host.earliest_free() == 3.0  # both held: the first expected to end
    assert host.earliest_free() == float("-inf")
