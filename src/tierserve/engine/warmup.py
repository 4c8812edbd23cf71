"""Load-time warm-up: first runs, and a sweep of batch sizes that seeds the service-time estimate."""

from __future__ import annotations

import logging

from tierserve.backends.base import Backend
from tierserve.backends.wide import own_session, sessions
from tierserve.profiler.profile import BatchTiming
from tierserve.profiler.sweep import dummy_feeds, sweep
from tierserve.scheduler.service_time import ServiceTimeEstimator

log = logging.getLogger(__name__)


def warm_up(
    backends: list[Backend],
    max_batch_size: int,
    shapes: dict[str, tuple[int, ...]],
    estimator: ServiceTimeEstimator,
    profile: dict[int, BatchTiming] | None = None,
) -> str:
    """Run every backend once (lazy initialisation), then seed ``estimator``: from ``profile`` (a
    ``tierserve profile`` file) when given, else from a short sweep of batch sizes on the first backend.
    The scheduler needs service times from the first request on. Returns where the seed came from."""
    try:
        for backend in sessions(backends):
            backend.run(dummy_feeds(backend, 1, shapes, batching=max_batch_size > 0))
        if profile is None:  # the time under load: a replica's own session, not the shared wide one
            profile = sweep(own_session(backends[0]), max_batch_size, shapes, reps=2)
            source = "warm-up sweep"
        else:
            source = "profile file"
    except Exception as exc:  # a model that cannot run on zeros still serves; it learns online instead
        log.warning("warm-up of %s failed (%s); service times will be learnt online", backends[0].kind, exc)
        return "online only"
    for rows, timing in profile.items():
        estimator.seed(rows, timing.mean_ms / 1000, max(timing.std_ms, timing.p95_ms - timing.mean_ms) / 1000)
    return source
