"""Load-time warm-up: first runs, and a sweep of batch sizes that seeds the service-time estimate."""

from __future__ import annotations

import logging
import time

import numpy as np

from tierserve.backends.base import Backend
from tierserve.scheduler.service_time import ServiceTimeEstimator

log = logging.getLogger(__name__)


def warm_up(
    backends: list[Backend],
    max_batch_size: int,
    shapes: dict[str, tuple[int, ...]],
    estimator: ServiceTimeEstimator,
) -> None:
    """Run every backend once (lazy initialisation), then seed ``estimator`` with a sweep of batch
    sizes 1, 2, 4, ... max_batch_size on the first: the scheduler needs service times from the start."""
    sizes = [1]
    while sizes[-1] * 2 <= max_batch_size:
        sizes.append(sizes[-1] * 2)
    if max_batch_size > sizes[-1]:
        sizes.append(max_batch_size)
    try:
        for backend in backends:
            backend.run(dummy_feeds(backend, 1, shapes, batching=max_batch_size > 0))
        for rows in sizes:
            feeds = dummy_feeds(backends[0], rows, shapes, batching=max_batch_size > 0)
            backends[0].run(dict(feeds))  # first run of a shape allocates; do not time it
            for _ in range(2):
                start = time.perf_counter()
                backends[0].run(dict(feeds))
                estimator.observe(rows, time.perf_counter() - start)
    except Exception as exc:  # a model that cannot run on zeros still serves; it learns online instead
        log.warning("warm-up of %s failed (%s); service times will be learnt online", backends[0].kind, exc)


def dummy_feeds(
    backend: Backend, rows: int, shapes: dict[str, tuple[int, ...]], *, batching: bool
) -> dict[str, np.ndarray]:
    feeds: dict[str, np.ndarray] = {}
    for spec in backend.signature.inputs:
        dims = spec.shape[1:] if batching else spec.shape
        given = iter(shapes.get(spec.name, ()))
        shape = tuple(next(given, 1) if dim == -1 else dim for dim in dims)
        if batching:
            shape = (rows, *shape)
        if spec.datatype.kind == "bytes":
            feeds[spec.name] = np.full(shape, b"", dtype=object)
        else:
            feeds[spec.name] = np.zeros(shape, dtype=spec.datatype.numpy)
    return feeds
