"""Offline sweep: run a backend at each batch size and record the spread of its service time."""

from __future__ import annotations

import time

import numpy as np

from tierserve.backends.base import Backend
from tierserve.profiler.profile import BatchTiming


def sweep(
    backend: Backend, max_batch_size: int, shapes: dict[str, tuple[int, ...]], *, reps: int = 20
) -> dict[int, BatchTiming]:
    timings: dict[int, BatchTiming] = {}
    for rows in batch_sizes(max_batch_size):
        feeds = dummy_feeds(backend, rows, shapes, batching=max_batch_size > 0)
        backend.run(dict(feeds))  # the first run of a shape allocates
        samples = []
        for _ in range(reps):
            start = time.perf_counter()
            backend.run(dict(feeds))
            samples.append((time.perf_counter() - start) * 1000)
        ms = np.asarray(samples)
        timings[rows] = BatchTiming(
            mean_ms=round(float(ms.mean()), 4),
            p50_ms=round(float(np.percentile(ms, 50)), 4),
            p95_ms=round(float(np.percentile(ms, 95)), 4),
            std_ms=round(float(ms.std()), 4),
            samples=reps,
        )
    return timings


def batch_sizes(max_batch_size: int) -> list[int]:
    """1, 2, 4, ... up to and including ``max_batch_size`` (just 1 for models that do not batch)."""
    sizes = [1]
    while sizes[-1] * 2 <= max_batch_size:
        sizes.append(sizes[-1] * 2)
    if max_batch_size > sizes[-1]:
        sizes.append(max_batch_size)
    return sizes


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
