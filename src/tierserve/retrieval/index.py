"""The vector index of one collection: an HNSW graph (usearch) over the storage precision, plus a
float32 file of every vector for exact scoring (re-ranking, selective filters, returned scores).

Keys in the graph are *slots*: each stored vector gets a new slot, never reused, so a slot's vector
never changes and the graph can be rebuilt or reconciled from the live slots at any time.

Concurrency: any number of searches run at once and alongside one writer (usearch locks per node);
only growing the graph's capacity (which reallocates) waits for searches to leave, through
``RWLock``.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from usearch.index import Index, MetricKind  # type: ignore[attr-defined]

from tierserve.errors import InvalidInput

METRICS = {"cosine": MetricKind.Cos, "dot": MetricKind.IP, "l2": MetricKind.L2sq}
PRECISIONS = ("f32", "f16", "i8")
# HNSW parameters. ef_construction 64 rather than usearch's 128 builds about twice as fast (inserts
# are the graph's cost); recall stays high because every candidate a search visits (ef_search 64,
# or k if larger) is re-scored exactly from float32 (see collection.py). benchmarks/retrieval.py
# measures recall@10 against exact search.
CONNECTIVITY = 16
EXPANSION_ADD = 64
EXPANSION_SEARCH = 64
FILE_MIN_ROWS = 1024


@dataclass(frozen=True)
class IndexSpec:
    dimension: int
    metric: str  # cosine, dot, l2
    precision: str  # f32, f16, i8

    def check(self) -> None:
        if self.metric not in METRICS:
            raise InvalidInput(f"metric must be one of {sorted(METRICS)}, got {self.metric!r}")
        if self.precision not in PRECISIONS:
            raise InvalidInput(f"precision must be one of {list(PRECISIONS)}, got {self.precision!r}")
        if self.precision == "i8" and self.metric != "cosine":
            # usearch quantizes to i8 by scaling unit vectors: lengths (dot, l2) would be lost.
            raise InvalidInput("precision i8 needs metric cosine (it stores directions, not lengths)")


class RWLock:
    """Shared for searches and ordinary writes, exclusive for reallocation."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            while self._writer:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            while self._writer:
                self._cond.wait()
            self._writer = True
            while self._readers:
                self._cond.wait()
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


def similarity(metric: str, distances: np.ndarray) -> np.ndarray:
    """Higher is closer: cosine similarity, the dot product, or the negated squared L2 distance."""
    scores: np.ndarray = -distances if metric == "l2" else 1.0 - distances
    return scores  # usearch's cos and ip distances are 1 - similarity


def exact_scores(metric: str, query: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """The exact similarity of ``query`` to each row (stored cosine vectors are unit length)."""
    if metric == "l2":
        diff = vectors - query
        squared: np.ndarray = np.einsum("ij,ij->i", diff, diff)
        return -squared
    dots: np.ndarray = vectors @ query
    return dots


class VectorFile:
    """float32 vectors by slot in a memory-mapped file that grows in steps. Writes land in the page
    cache at once, so they outlive the process (SIGKILL); the metadata store says which slots are live."""

    def __init__(self, path: Path, dimension: int) -> None:
        self.path = path
        self.dimension = dimension
        self._row_bytes = dimension * 4
        if not path.exists():
            path.touch()
        self._map = self._open(max(1, path.stat().st_size // self._row_bytes))

    def _open(self, rows: int) -> np.memmap:
        if self.path.stat().st_size < rows * self._row_bytes:
            os.truncate(self.path, rows * self._row_bytes)
        return np.memmap(self.path, dtype=np.float32, mode="r+", shape=(rows, self.dimension))

    @property
    def rows(self) -> int:
        return int(self._map.shape[0])

    def write(self, slots: np.ndarray, vectors: np.ndarray) -> None:
        needed = int(slots.max()) + 1
        if needed > self.rows:
            self._map = self._open(max(needed, self.rows * 2, FILE_MIN_ROWS))
        self._map[slots] = vectors

    def read(self, slots: np.ndarray) -> np.ndarray:
        return np.asarray(self._map[slots], dtype=np.float32)

    def close(self) -> None:
        self._map.flush()


class VectorIndex:
    """The HNSW graph of one collection, keyed by slot."""

    def __init__(self, spec: IndexSpec, path: Path | None = None) -> None:
        self.spec = spec
        self._index = Index(
            ndim=spec.dimension,
            metric=METRICS[spec.metric],
            dtype=spec.precision,
            connectivity=CONNECTIVITY,
            expansion_add=EXPANSION_ADD,
            expansion_search=EXPANSION_SEARCH,
        )
        if path is not None and path.is_file():
            self._index.load(str(path))
        self.lock = RWLock()

    def __len__(self) -> int:
        return len(self._index)

    @property
    def memory_bytes(self) -> int:
        return int(self._index.memory_usage)

    def keys(self) -> np.ndarray:
        return np.asarray(self._index.keys, dtype=np.uint64)

    def add(self, slots: np.ndarray, vectors: np.ndarray, threads: int = 0) -> None:
        if not len(slots):
            return
        grows = len(self._index) + len(slots) >= self._index.capacity
        with self.lock.exclusive() if grows else self.lock.shared():
            self._index.add(slots.astype(np.uint64), vectors, threads=threads)

    def remove(self, slots: np.ndarray) -> None:
        if len(slots):
            with self.lock.shared():
                self._index.remove(slots.astype(np.uint64))

    def search(self, query: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
        """Up to ``count`` nearest slots and their similarities (approximate, best first)."""
        with self.lock.shared():  # usearch widens ef to ``count`` itself
            found = self._index.search(query, count, threads=1)
        return np.asarray(found.keys, dtype=np.int64), similarity(self.spec.metric, found.distances)

    def save(self, path: Path) -> None:
        """Written beside ``path`` and renamed over it: a crash leaves the old file or the new one."""
        partial = path.with_suffix(".partial")
        with self.lock.shared():
            self._index.save(str(partial))
        os.replace(partial, path)
