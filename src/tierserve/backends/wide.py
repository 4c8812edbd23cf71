"""A pool's replicas share one extra session with a thread per core, for batches that run alone.

Under load, one single-threaded session per core serves the most items/s (see
``engine.kinds.local_plan``). Idle, that leaves a lone request on one core while the others
wait: all-MiniLM-L6-v2 at batch 1 takes about 1.5x as long on 1 thread as on 2 here. So the
replicas of a pool count the batches they are running; a batch that starts while no other runs
takes the wide session, and any batch that starts meanwhile takes its replica's own. Example::

    widening = Widening(OnnxBackend(path, OnnxOptions(intra_op_threads=2)))
    replicas = [WideWhenAlone(OnnxBackend(path, OnnxOptions()), widening) for _ in range(2)]
"""

from __future__ import annotations

import threading

import numpy as np

from tierserve.backends.base import Backend


class Widening:
    """The shared wide session and the count of batches running on the pool's replicas."""

    def __init__(self, wide: Backend) -> None:
        self.wide = wide
        self.lock = threading.Lock()
        self.running = 0
        self.wide_busy = False
        self.users = 0

    def release(self) -> None:
        with self.lock:
            self.users -= 1
            last = self.users == 0
        if last:
            self.wide.close()


class WideWhenAlone:
    """One replica's backend: its own session, or the pool's wide one when its batch runs alone."""

    def __init__(self, own: Backend, widening: Widening) -> None:
        self.own = own
        self.widening = widening
        self.kind = own.kind
        self.signature = own.signature
        with widening.lock:
            widening.users += 1
        self.wide_batches = 0  # how many of its batches ran wide (read by tests and benchmarks)

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        widening = self.widening
        with widening.lock:
            wide = widening.running == 0 and not widening.wide_busy
            widening.running += 1
            if wide:
                widening.wide_busy = True
        try:
            if wide:
                self.wide_batches += 1
                return widening.wide.run(feeds)
            return self.own.run(feeds)
        finally:
            with widening.lock:
                widening.running -= 1
                if wide:
                    widening.wide_busy = False

    def available(self) -> bool:
        return self.own.available()

    def close(self) -> None:
        self.own.close()
        self.widening.release()


def own_session(backend: Backend) -> Backend:
    """The replica's own backend: what a batch runs on under load (profiles and warm-up sweeps
    measure it; the autoscaler copies it)."""
    return backend.own if isinstance(backend, WideWhenAlone) else backend


def sessions(backends: list[Backend]) -> list[Backend]:
    """Every distinct backend behind ``backends``, wide sessions included (each needs its first run)."""
    found: dict[int, Backend] = {}
    for backend in backends:
        parts = [backend.own, backend.widening.wide] if isinstance(backend, WideWhenAlone) else [backend]
        for part in parts:
            found.setdefault(id(part), part)
    return list(found.values())
