"""The index wrapper: graph search against exact search, removal, save and load, the vector file."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from tierserve.errors import InvalidInput
from tierserve.retrieval.index import IndexSpec, RWLock, VectorFile, VectorIndex, exact_scores, similarity


def _unit(rows: int, dim: int, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((rows, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@pytest.mark.parametrize("precision", ["f32", "f16", "i8"])
def test_graph_search_finds_the_exact_neighbours(precision: str) -> None:
    vectors = _unit(2000, 32)
    index = VectorIndex(IndexSpec(32, "cosine", precision))
    index.add(np.arange(2000), vectors)
    recalled = 0
    for q in _unit(20, 32, seed=1):
        slots, scores = index.search(q, 10)
        exact = np.argsort(-exact_scores("cosine", q, vectors))[:10]
        recalled += len(set(slots.tolist()) & set(exact.tolist()))
        assert np.all(np.diff(scores) <= 1e-3)  # best first
    assert recalled / 200 >= 0.9


def test_removed_slots_are_never_returned_and_saved_graphs_load(tmp_path: Path) -> None:
    vectors = _unit(300, 8)
    index = VectorIndex(IndexSpec(8, "l2", "f32"))
    index.add(np.arange(300), vectors)
    index.remove(np.arange(0, 300, 2))
    slots, _ = index.search(vectors[0], 50)
    assert len(slots) and all(s % 2 == 1 for s in slots)
    index.save(tmp_path / "graph")
    loaded = VectorIndex(IndexSpec(8, "l2", "f32"), tmp_path / "graph")
    assert sorted(loaded.keys().tolist()) == list(range(1, 300, 2))
    np.testing.assert_array_equal(loaded.search(vectors[1], 5)[0], index.search(vectors[1], 5)[0])


def test_similarities_are_higher_for_closer_vectors() -> None:
    query = np.array([1.0, 0.0], dtype=np.float32)
    rows = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0]], dtype=np.float32)
    assert exact_scores("dot", query, rows).tolist() == [1.0, 0.0, 2.0]
    assert exact_scores("l2", query, rows).tolist() == [0.0, -2.0, -1.0]
    np.testing.assert_allclose(similarity("cosine", np.array([0.0, 0.25])), [1.0, 0.75])
    np.testing.assert_allclose(similarity("l2", np.array([0.0, 2.0])), [0.0, -2.0])


def test_specs_refuse_what_the_storage_cannot_hold() -> None:
    IndexSpec(4, "cosine", "i8").check()
    for spec, words in [
        (IndexSpec(4, "hamming", "f32"), "metric"),
        (IndexSpec(4, "cosine", "f64"), "precision"),
        (IndexSpec(4, "dot", "i8"), "needs metric cosine"),
    ]:
        with pytest.raises(InvalidInput, match=words):
            spec.check()


def test_the_vector_file_grows_and_keeps_what_it_was_given(tmp_path: Path) -> None:
    path = tmp_path / "vectors.f32"
    file = VectorFile(path, 4)
    file.write(np.array([0, 5000]), np.array([[1, 2, 3, 4], [5, 6, 7, 8]], dtype=np.float32))
    assert file.rows >= 5001
    file.close()
    again = VectorFile(path, 4)
    np.testing.assert_array_equal(again.read(np.array([5000, 0])), [[5, 6, 7, 8], [1, 2, 3, 4]])


def test_exclusive_waits_for_shared_holders_to_leave() -> None:
    lock = RWLock()
    order: list[str] = []
    entered = threading.Event()
    release = threading.Event()

    def reader() -> None:
        with lock.shared():
            entered.set()
            release.wait(30)
            order.append("reader out")

    thread = threading.Thread(target=reader)
    thread.start()
    assert entered.wait(30)
    writer = threading.Thread(target=lambda: [lock.exclusive().__enter__(), order.append("writer in")])
    writer.start()
    release.set()
    thread.join(30)
    writer.join(30)
    assert order == ["reader out", "writer in"]
