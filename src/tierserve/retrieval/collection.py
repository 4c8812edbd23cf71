"""One collection: ids, vectors and metadata, searched by vector with filters.

Write path (one writer at a time per collection): vectors into the float32 file at fresh slots, then
one SQLite transaction (the acknowledgement: what it commits survives SIGKILL), then the in-memory
state (ids by slot, filter columns, the graph). Readers run beside the writer: they read whatever
arrays they find and drop any slot whose id is gone.

Search (rules, in order):

1. A filter is evaluated on the columns first. If it matches few items (at most ``EXACT_LIMIT``, or
   under ``EXACT_SHARE`` of the collection) those are scored exactly: a selective filter still
   returns ``k`` results whenever ``k`` items match.
2. Otherwise the graph is searched for more than ``k`` (by the inverse of the filter's selectivity)
   and the matches kept; while fewer than ``k`` remain the search widens, and past
   ``GRAPH_FETCH_LIMIT`` it falls back to exact scoring of every match.
3. Candidates are re-scored exactly from the float32 vectors, so the scores returned (and
   ``min_similarity``) are exact whatever the storage precision. Without a filter the candidates are
   all that the graph search visited (``ef``, default ``EXPANSION_SEARCH``, at least ``k``: a larger
   ``ef`` trades time for recall); ``overfetch`` > 1
   takes that many times ``k`` (re-ranking an over-fetched set).
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from tierserve.errors import InvalidInput, NotFound
from tierserve.retrieval.columns import MetadataColumns
from tierserve.retrieval.filters import Filter, flatten
from tierserve.retrieval.index import EXPANSION_SEARCH, IndexSpec, VectorFile, VectorIndex, exact_scores
from tierserve.retrieval.store import CollectionRecord, CollectionStore, ItemRow

log = logging.getLogger(__name__)

EXACT_LIMIT = 20_000
EXACT_SHARE = 0.02
GRAPH_FETCH_LIMIT = 4096
EXACT_CHUNK_ROWS = 16_384
CHECKPOINT_CHANGES = 100_000  # the graph is saved after this many changes (and at shutdown)
INDEX_FILE = "index.usearch"
VECTORS_FILE = "vectors.f32"


@dataclass(frozen=True)
class NewItem:
    key: str
    vector: np.ndarray  # float32, checked (dimension, finite), unit length for cosine
    metadata: str | None  # JSON object
    flat: dict[str, Any]  # its filterable fields
    text: str | None


@dataclass(frozen=True)
class Hit:
    key: str
    slot: int
    score: float


class Collection:
    def __init__(self, record: CollectionRecord, directory: Path, store: CollectionStore) -> None:
        self.record = record
        self.spec = IndexSpec(record.dimension, record.metric, record.precision)
        self.directory = directory
        self._store = store
        self._write = threading.Lock()
        directory.mkdir(parents=True, exist_ok=True)
        self._vectors = VectorFile(directory / VECTORS_FILE, record.dimension)
        self._index = VectorIndex(self.spec, directory / INDEX_FILE)
        self._columns = MetadataColumns()
        self._keys: list[str | None] = []
        self._alive = np.zeros(1024, dtype=bool)
        self._next_slot = record.next_slot
        self._count = 0
        self._changes = 0
        self._dropped = False
        self._load()

    # -- loading ---------------------------------------------------------------------------------

    def _load(self) -> None:
        slots: list[int] = []
        for key, slot, metadata in self._store.live(self.record.id):
            self._place(slot, key)
            slots.append(slot)
            if metadata:
                self._columns.set(slot, flatten(orjson.loads(metadata)))
        self._count = len(slots)
        self._next_slot = max(self._next_slot, max(slots, default=-1) + 1)
        live = np.asarray(slots, dtype=np.uint64)
        indexed = self._index.keys()
        stale = np.setdiff1d(indexed, live)
        missing = np.setdiff1d(live, indexed)
        self._index.remove(stale)
        for start in range(0, len(missing), 65_536):
            chunk = missing[start : start + 65_536]
            self._index.add(chunk, self._vectors.read(chunk.astype(np.int64)))
        if len(stale) or len(missing):
            log.info(
                "collection %s/%s: graph reconciled with the store (%d added, %d removed)",
                self.record.tenant, self.record.name, len(missing), len(stale),
            )  # fmt: skip
            self._changes = len(stale) + len(missing)

    def _place(self, slot: int, key: str | None) -> None:
        if slot >= len(self._keys):
            self._keys.extend([None] * (slot + 1 - len(self._keys)))
        if slot >= len(self._alive):
            grown = np.zeros(max(slot + 1, len(self._alive) * 2), dtype=bool)
            grown[: len(self._alive)] = self._alive
            self._alive = grown
        self._keys[slot] = key
        self._alive[slot] = key is not None

    # -- writes ----------------------------------------------------------------------------------

    def upsert(self, items: list[NewItem]) -> int:
        """Store ``items`` (new ids added, known ids replaced); how many ids were new."""
        with self._write:
            self._check_open()
            first = self._next_slot
            slots = np.arange(first, first + len(items), dtype=np.int64)
            self._vectors.write(slots, np.stack([item.vector for item in items]))
            rows = [ItemRow(it.key, int(s), it.metadata, it.text) for it, s in zip(items, slots, strict=True)]
            replaced = self._store.upsert(self.record.id, rows, first + len(items))  # acknowledged here
            for item, slot in zip(items, slots, strict=True):
                self._place(int(slot), item.key)
                if item.flat:
                    self._columns.set(int(slot), item.flat)
            self._next_slot = first + len(items)  # after the slots exist: readers size by it
            self._index.add(slots.astype(np.uint64), self._vectors.read(slots))
            self._forget(replaced)
            self._count += len(items) - len(replaced)
            self._changed(len(items) + len(replaced))
            return len(items) - len(replaced)

    def delete_keys(self, keys: list[str]) -> int:
        with self._write:
            self._check_open()
            slots = self._store.delete(self.record.id, keys)
            self._forget(slots)
            self._count -= len(slots)
            self._changed(len(slots))
            return len(slots)

    def delete_where(self, node: Filter) -> int:
        with self._write:
            self._columns.check(node)
            size = min(self._next_slot, len(self._alive))
            mask = self._columns.evaluate(node, size) & self._alive[:size]
            keys = [k for k in (self._keys[int(s)] for s in np.flatnonzero(mask)) if k is not None]
        return self.delete_keys(keys) if keys else 0

    def _forget(self, slots: list[int]) -> None:
        if not slots:
            return
        for slot in slots:
            self._place(slot, None)
            self._columns.clear(slot)
        self._index.remove(np.asarray(slots, dtype=np.uint64))

    def _changed(self, count: int) -> None:
        self._changes += count
        if self._changes >= CHECKPOINT_CHANGES:
            self._checkpoint()

    def _checkpoint(self) -> None:
        self._index.save(self.directory / INDEX_FILE)
        self._changes = 0

    def close(self) -> None:
        with self._write:
            if self._changes:
                self._checkpoint()
            self._vectors.close()

    def destroy(self, forget: Callable[[], None]) -> None:
        """``forget`` (the store's drop) and remove the files, between writes: a write that waited
        for this one finds the collection gone instead of writing rows nobody owns."""
        with self._write:
            forget()
            self._dropped = True
            shutil.rmtree(self.directory, ignore_errors=True)

    def _check_open(self) -> None:
        if self._dropped:
            raise NotFound(f"collection '{self.record.name}' is not found")

    # -- reads -----------------------------------------------------------------------------------

    @property
    def count(self) -> int:
        return self._count

    def describe(self) -> dict[str, Any]:
        r = self.record
        return {
            "name": r.name,
            "dimension": r.dimension,
            "metric": r.metric,
            "precision": r.precision,
            "model": r.model,
            "count": self._count,
            "index_bytes": self._index.memory_bytes,
        }

    def get(self, keys: list[str]) -> list[dict[str, Any]]:
        rows = self._store.by_keys(self.record.id, keys)
        vectors = self._vectors.read(np.asarray([r.slot for r in rows], dtype=np.int64))
        by_key = {
            r.key: {
                "id": r.key,
                "vector": vectors[i].tolist(),
                "metadata": orjson.loads(r.metadata) if r.metadata else None,
                "text": r.text,
            }
            for i, r in enumerate(rows)
        }
        return [by_key[k] for k in keys if k in by_key]

    def rows(self, slots: list[int]) -> dict[int, ItemRow]:
        return self._store.by_slots(self.record.id, slots)

    def search(
        self,
        query: np.ndarray,
        k: int,
        node: Filter | None = None,
        min_score: float | None = None,
        overfetch: int = 1,
        ef: int | None = None,
    ) -> list[Hit]:
        """The ``k`` best items, best first, with exact scores (see the module docstring)."""
        want = k * overfetch
        alive = self._alive
        size = min(self._next_slot, len(alive))
        if node is not None:
            self._columns.check(node)
            mask = self._columns.evaluate(node, size) & alive[:size]
            matched = int(mask.sum())
            if matched == 0:
                return []
            if matched <= EXACT_LIMIT or matched < EXACT_SHARE * self._count:
                slots = self._exact(query, np.flatnonzero(mask), want)
            else:
                slots = self._graph_filtered(query, mask, want, matched)
        else:
            # The graph visits EXPANSION_SEARCH candidates whatever k is: re-scoring all of them
            # exactly costs little and undoes what i8 or f16 storage got wrong.
            visit = max(want, ef or EXPANSION_SEARCH)
            slots, _ = self._index.search(query, min(visit, max(self._count, 1)))
        slots = slots[(slots >= 0) & (slots < len(alive))]
        slots = slots[alive[slots]]
        if not len(slots):
            return []
        scores = exact_scores(self.spec.metric, query, self._vectors.read(slots))
        order = np.argsort(-scores, kind="stable")[:k]
        hits = []
        for i in order:
            score = float(scores[i])
            if min_score is not None and score < min_score:
                break
            key = self._keys[int(slots[i])]
            if key is not None:
                hits.append(Hit(key, int(slots[i]), score))
        return hits

    def _graph_filtered(self, query: np.ndarray, mask: np.ndarray, want: int, matched: int) -> np.ndarray:
        fetch = min(self._count, int(want * self._count / matched * 1.5) + 10)
        while fetch <= GRAPH_FETCH_LIMIT:
            slots, _ = self._index.search(query, fetch)
            slots = slots[(slots >= 0) & (slots < len(mask))]
            kept: np.ndarray = slots[mask[slots]]
            if len(kept) >= want or fetch >= self._count:
                return kept[:want]
            fetch *= 4
        return self._exact(query, np.flatnonzero(mask), want)

    def _exact(self, query: np.ndarray, slots: np.ndarray, want: int) -> np.ndarray:
        best_slots = np.empty(0, dtype=np.int64)
        best_scores = np.empty(0, dtype=np.float32)
        for start in range(0, len(slots), EXACT_CHUNK_ROWS):
            chunk = slots[start : start + EXACT_CHUNK_ROWS]
            scores = exact_scores(self.spec.metric, query, self._vectors.read(chunk))
            best_slots = np.concatenate([best_slots, chunk])
            best_scores = np.concatenate([best_scores, scores])
            if len(best_slots) > want:
                top = np.argpartition(-best_scores, want - 1)[:want]
                best_slots, best_scores = best_slots[top], best_scores[top]
        ordered: np.ndarray = best_slots[np.argsort(-best_scores, kind="stable")]
        return ordered

    def check_vectors(self, vectors: np.ndarray, what: str, positions: list[int] | None = None) -> np.ndarray:
        """float32 rows of this collection's dimension, finite; unit length for cosine. Messages name
        row ``i`` as ``what[positions[i]]`` (its place in the request)."""
        if vectors.ndim != 2 or vectors.shape[1] != self.record.dimension:
            got = vectors.shape[-1] if vectors.ndim else 0
            raise InvalidInput(
                f"{what}: dimension {got}; collection '{self.record.name}' holds {self.record.dimension}"
            )
        return normalise(self.spec.metric, vectors, what, positions)


def normalise(metric: str, vectors: np.ndarray, what: str, positions: list[int] | None = None) -> np.ndarray:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)

    def place(row: int) -> int:
        return positions[row] if positions is not None else row

    bad = ~np.isfinite(vectors).all(axis=1)
    if bad.any():
        raise InvalidInput(f"{what}[{place(int(np.flatnonzero(bad)[0]))}] holds NaN or infinity")
    if metric != "cosine":
        return vectors
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    if (norms == 0).any():
        row = place(int(np.flatnonzero(norms[:, 0] == 0)[0]))
        raise InvalidInput(f"{what}[{row}] is all zeros: it has no direction")
    unit: np.ndarray = vectors / norms
    return unit
