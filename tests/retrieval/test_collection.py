"""One collection without a server: upsert, filtered search returning full k, reload from the store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest

from tierserve.errors import InvalidInput, NotFound
from tierserve.retrieval.collection import Collection, NewItem
from tierserve.retrieval.filters import flatten, parse
from tierserve.retrieval.index import exact_scores
from tierserve.retrieval.store import CollectionStore

DIM = 16


def _items(count: int, seed: int = 0, prefix: str = "v") -> list[NewItem]:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((count, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    items = []
    for i in range(count):
        metadata = {"group": i % 100, "kind": "even" if i % 2 == 0 else "odd"}
        items.append(
            NewItem(f"{prefix}{i}", vectors[i], orjson.dumps(metadata).decode(), flatten(metadata), None)
        )
    return items


@pytest.fixture
def store(tmp_path: Path) -> CollectionStore:
    return CollectionStore(tmp_path / "collections.db")


def _open(store: CollectionStore, tmp_path: Path, precision: str = "i8") -> Collection:
    record = store.find("t", "c") or store.create("t", "c", DIM, "cosine", precision, None)
    return Collection(record, tmp_path / str(record.id), store)


def test_a_one_percent_filter_still_returns_k_results(store: CollectionStore, tmp_path: Path) -> None:
    collection = _open(store, tmp_path)
    items = _items(3000)
    assert collection.upsert(items) == 3000
    query = items[7].vector
    node = parse({"group": 7})  # 30 of 3000 items
    hits = collection.search(query, 10, node)
    assert len(hits) == 10
    members = [i for i in range(3000) if i % 100 == 7]
    exact = sorted(members, key=lambda i: -float(items[i].vector @ query))[:10]
    assert [h.key for h in hits] == [f"v{i}" for i in exact]
    wide = collection.search(query, 10, parse({"kind": "odd"}))  # half the items: through the graph
    assert len(wide) == 10 and all(int(h.key[1:]) % 2 == 1 for h in wide)


def test_scores_are_exact_and_min_similarity_cuts(store: CollectionStore, tmp_path: Path) -> None:
    collection = _open(store, tmp_path)
    items = _items(500)
    collection.upsert(items)
    query = items[0].vector
    hits = collection.search(query, 5, overfetch=4)
    stacked = np.stack([it.vector for it in items])
    expected = np.sort(exact_scores("cosine", query, stacked))[::-1][:5]
    np.testing.assert_allclose([h.score for h in hits], expected, atol=1e-5)
    assert hits[0].key == "v0"
    assert [h.key for h in collection.search(query, 5, min_score=0.99)] == ["v0"]


def test_replacing_and_deleting_and_reloading(store: CollectionStore, tmp_path: Path) -> None:
    collection = _open(store, tmp_path)
    collection.upsert(_items(200))
    moved = _items(1, seed=9, prefix="v")  # v0 gets a new vector
    assert collection.upsert(moved) == 0
    assert collection.count == 200
    assert collection.delete_keys(["v1", "v2", "missing"]) == 2
    assert collection.delete_where(parse({"group": 3})) == 2  # v3, v103
    assert collection.count == 196
    top = collection.search(moved[0].vector, 1)
    assert top[0].key == "v0" and top[0].score == pytest.approx(1.0, abs=1e-5)
    before = [h.key for h in collection.search(moved[0].vector, 20)]
    collection.close()  # saves the graph
    reloaded = _open(store, tmp_path)
    assert reloaded.count == 196
    assert [h.key for h in reloaded.search(moved[0].vector, 20)] == before
    assert {"v1", "v2", "v3", "v103"}.isdisjoint(h.key for h in reloaded.search(moved[0].vector, 200))


def test_a_graph_that_was_never_saved_is_rebuilt_from_the_store(
    store: CollectionStore, tmp_path: Path
) -> None:
    collection = _open(store, tmp_path, precision="f32")
    items = _items(300)
    collection.upsert(items)
    collection.delete_keys(["v5"])
    # No close(): as after SIGKILL, only the store and the vector file remain.
    reloaded = _open(store, tmp_path, precision="f32")
    assert reloaded.count == 299
    assert reloaded.search(items[10].vector, 1)[0].key == "v10"
    assert "v5" not in [h.key for h in reloaded.search(items[5].vector, 5)]


def test_vectors_are_checked(store: CollectionStore, tmp_path: Path) -> None:
    collection = _open(store, tmp_path)
    for rows, words in [
        (np.ones((1, DIM + 1)), "dimension 17"),
        (np.full((1, DIM), np.nan), "NaN"),
        (np.zeros((2, DIM)), "all zeros"),
    ]:
        with pytest.raises(InvalidInput, match=words):
            collection.check_vectors(rows, "items")
    unit = collection.check_vectors(np.full((1, DIM), 3.0), "items")
    assert np.linalg.norm(unit) == pytest.approx(1.0)


def test_items_without_metadata_beside_filtered_ones(store: CollectionStore, tmp_path: Path) -> None:
    collection = _open(store, tmp_path)
    tagged = _items(10)
    collection.upsert(tagged)
    bare = [NewItem(f"bare{i}", item.vector, None, {}, None) for i, item in enumerate(_items(3000, seed=2))]
    collection.upsert(bare)  # slots beyond the columns' capacity, with no metadata
    hits = collection.search(tagged[3].vector, 5, parse({"group": 3}))
    assert [h.key for h in hits] == ["v3"]
    assert len(collection.search(tagged[3].vector, 5, parse({"group": {"$ne": 3}}))) == 5


def test_a_dropped_collection_takes_no_more_writes_and_its_id_is_never_reused(
    store: CollectionStore, tmp_path: Path
) -> None:
    collection = _open(store, tmp_path)
    collection.upsert(_items(5))
    first_id = collection.record.id
    collection.destroy(lambda: store.drop(first_id))
    with pytest.raises(NotFound):
        collection.upsert(_items(1, prefix="late"))
    assert not collection.directory.exists()
    again = store.create("t", "c", DIM, "cosine", "i8", None)
    assert again.id > first_id
    assert list(store.live(again.id)) == []


def test_a_wider_graph_search_finds_at_least_as_much(store: CollectionStore, tmp_path: Path) -> None:
    collection = _open(store, tmp_path)
    items = _items(500)
    collection.upsert(items)
    stacked = np.stack([it.vector for it in items])
    found = {1: 0, 1024: 0}
    for q in _items(20, seed=5):
        exact = {f"v{i}" for i in np.argsort(-(stacked @ q.vector))[:10]}
        for ef in found:
            found[ef] += len(exact & {h.key for h in collection.search(q.vector, 10, ef=ef)})
    # ef 1024 over 500 items visits about all of them (the graph is built by several threads, so
    # not bit for bit the same each run: a margin rather than exactly 200).
    assert found[1024] >= found[1] and found[1024] >= 195
