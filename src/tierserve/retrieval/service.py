"""Collections per tenant: create, list, describe, drop; upsert, delete, get and search items.

Every request body is checked whole before anything is written (a bad item anywhere refuses the
request, with its index in the message), and texts are embedded before the write, so a request
either lands entirely or not at all. Another tenant's collection is simply not found (404).
"""

from __future__ import annotations

import asyncio
import re
import shutil
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from prometheus_client.core import GaugeMetricFamily

from tierserve.errors import InvalidInput, NotFound
from tierserve.retrieval import filters
from tierserve.retrieval.collection import Collection, Hit, NewItem
from tierserve.retrieval.embeddings import EmbeddingService
from tierserve.retrieval.index import IndexSpec
from tierserve.retrieval.inference import TierHint
from tierserve.retrieval.rerank import cross_encode
from tierserve.retrieval.store import CollectionRecord, CollectionStore, ItemRow

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
MAX_COLLECTIONS_PER_TENANT = 100
MAX_ITEMS_PER_COLLECTION = 5_000_000
MAX_ITEMS_PER_REQUEST = 10_000
MAX_DIMENSION = 4096
MAX_K = 1000
MAX_EF = 4096
MAX_ID_CHARS = 256
MAX_METADATA_BYTES = 16 << 10
MAX_TEXT_CHARS = 64 << 10
EXACT_RERANK_FACTOR = 4  # "rerank": "exact" scores 4k candidates exactly
CROSS_ENCODER_CANDIDATES = 50  # default candidates a cross-encoder reads (at most MAX_CROSS_CANDIDATES)
MAX_CROSS_CANDIDATES = 500
DATABASE = "collections.db"


class CollectionNotFound(NotFound):
    def __init__(self, name: str) -> None:
        super().__init__(f"collection '{name}' is not found")


@dataclass(frozen=True)
class SearchRequest:
    k: int
    vector: np.ndarray | None
    text: str | None
    model: str | None
    filter: filters.Filter | None
    min_similarity: float | None
    rerank: str | None  # None, "exact", or a cross-encoder model's name
    candidates: int
    include_vectors: bool
    ef: int | None = None  # candidates the graph search visits (recall against time)


class CollectionService:
    def __init__(self, state_dir: Path, embeddings: EmbeddingService) -> None:
        self._root = state_dir / "collections"
        self._embeddings = embeddings
        self._store: CollectionStore | None = None
        self._open: dict[tuple[str, str], Collection] = {}  # this process owns the state directory
        self._lock = threading.Lock()

    @property
    def store(self) -> CollectionStore:
        if self._store is None:  # opened on first use: servers that never use collections make no files
            self._store = CollectionStore(self._root / DATABASE)
            self._remove_orphans(self._store)
        return self._store

    def _remove_orphans(self, store: CollectionStore) -> None:
        """Directories of collections whose drop committed but whose files outlived a crash."""
        known = {str(r.id) for r in store.collections()}
        for entry in self._root.iterdir():
            if entry.is_dir() and entry.name not in known:
                shutil.rmtree(entry, ignore_errors=True)

    def metric_families(self) -> list[GaugeMetricFamily]:
        """Items and index memory of every open collection (those used since the start), at scrape."""
        items = GaugeMetricFamily(
            "tierserve_collection_items", "Items in a vector collection.", labels=["tenant", "collection"]
        )
        memory = GaugeMetricFamily(
            "tierserve_collection_index_bytes",
            "Memory of a collection's vector index (the graph and its stored vectors).",
            labels=["tenant", "collection"],
        )
        for (tenant, name), collection in list(self._open.items()):
            items.add_metric([tenant, name], collection.count)
            memory.add_metric([tenant, name], collection.describe()["index_bytes"])
        return [items, memory]

    def close(self) -> None:
        with self._lock:
            for collection in self._open.values():
                collection.close()
            self._open.clear()

    # -- collections -----------------------------------------------------------------------------

    def create(self, tenant: str, body: Mapping[str, Any]) -> dict[str, Any]:
        name = _name(body.get("name"))
        model = body.get("model")
        if model is not None and not isinstance(model, str):
            raise InvalidInput("'model' must name an embedding model")
        dimension = body.get("dimension")
        if dimension is None and model is not None:
            dimension = self._embeddings.models.embedder(model).width
        if (
            isinstance(dimension, bool)
            or not isinstance(dimension, int)
            or not 1 <= dimension <= MAX_DIMENSION
        ):
            raise InvalidInput(f"'dimension' must be an integer in 1..{MAX_DIMENSION} (or name a 'model')")
        if model is not None:
            width = self._embeddings.models.embedder(model).width
            if width is not None and width != dimension:
                raise InvalidInput(f"model '{model}' makes {width}-dimensional vectors, not {dimension}")
        spec = IndexSpec(dimension, _choice(body, "metric", "cosine"), _choice(body, "precision", "f32"))
        spec.check()
        with self._lock:
            if self.store.count_for(tenant) >= MAX_COLLECTIONS_PER_TENANT:
                raise InvalidInput(f"a tenant may hold at most {MAX_COLLECTIONS_PER_TENANT} collections")
            record = self.store.create(tenant, name, spec.dimension, spec.metric, spec.precision, model)
        return self._collection(record).describe()

    def listing(self, tenant: str) -> list[dict[str, Any]]:
        return [self._collection(record).describe() for record in self.store.collections(tenant)]

    def describe(self, tenant: str, name: str) -> dict[str, Any]:
        return self.find(tenant, name).describe()

    def drop(self, tenant: str, name: str) -> None:
        collection = self.find(tenant, name)
        with self._lock:
            collection.destroy(lambda: self.store.drop(collection.record.id))
            self._open.pop((tenant, name), None)

    def find(self, tenant: str, name: str) -> Collection:
        found = self._open.get((tenant, name))
        if found is not None:
            return found
        if not isinstance(name, str) or not NAME.match(name):
            raise CollectionNotFound(str(name))
        record = self.store.find(tenant, name)
        if record is None:
            raise CollectionNotFound(name)
        return self._collection(record)

    async def _find(self, tenant: str, name: str) -> Collection:
        """``find`` without leaving the event loop when the collection is open already."""
        found = self._open.get((tenant, name))
        return found if found is not None else await asyncio.to_thread(self.find, tenant, name)

    def _collection(self, record: CollectionRecord) -> Collection:
        key = (record.tenant, record.name)
        with self._lock:
            found = self._open.get(key)
            if found is None:
                found = self._open[key] = Collection(record, self._root / str(record.id), self.store)
            return found

    # -- items -----------------------------------------------------------------------------------

    async def upsert(self, tenant: str, name: str, body: Mapping[str, Any], hint: TierHint) -> dict[str, Any]:
        collection = await self._find(tenant, name)
        raw = body.get("items")
        if not isinstance(raw, list) or not raw:
            raise InvalidInput("'items' must be a non-empty list of {id, vector or text, metadata}")
        if len(raw) > MAX_ITEMS_PER_REQUEST:
            raise InvalidInput(f"{len(raw)} items in one request; at most {MAX_ITEMS_PER_REQUEST}")
        keys, metas, texts, given, matrix = await asyncio.to_thread(_prepare_items, raw, collection)
        if collection.count + len(raw) > MAX_ITEMS_PER_COLLECTION:
            raise InvalidInput(f"collection '{name}' would exceed {MAX_ITEMS_PER_COLLECTION} items")
        has_vector = set(given)
        to_embed = [i for i in range(len(raw)) if i not in has_vector]
        if to_embed:
            model = _model_for(body, collection)
            embedded = await self._embeddings.embed_texts(model, [texts[i] or "" for i in to_embed], hint)
            matrix[to_embed] = collection.check_vectors(embedded.vectors, "text embedding")

        def write() -> int:
            items = [
                NewItem(key, matrix[i], metas[i], _flat(metas[i]), texts[i]) for i, key in enumerate(keys)
            ]
            return collection.upsert(items)

        added = await asyncio.to_thread(write)
        return {"upserted": len(keys), "added": added, "count": collection.count}

    async def delete(self, tenant: str, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        collection = await self._find(tenant, name)
        has_ids, has_filter = "ids" in body, "filter" in body
        if has_ids == has_filter:
            raise InvalidInput("give either 'ids' (a list of ids) or 'filter' (a metadata filter)")
        if has_ids:
            ids = body["ids"]
            if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
                raise InvalidInput("'ids' must be a non-empty list of string ids")
            if len(ids) > MAX_ITEMS_PER_REQUEST:
                raise InvalidInput(f"at most {MAX_ITEMS_PER_REQUEST} ids per request")
            deleted = await asyncio.to_thread(collection.delete_keys, list(dict.fromkeys(ids)))
        else:
            deleted = await asyncio.to_thread(collection.delete_where, filters.parse(body["filter"]))
        return {"deleted": deleted, "count": collection.count}

    def get(self, tenant: str, name: str, key: str) -> dict[str, Any]:
        found = self.find(tenant, name).get([key])
        if not found:
            raise NotFound(f"no item '{key}' in collection '{name}'")
        return found[0]

    async def search(self, tenant: str, name: str, body: Mapping[str, Any], hint: TierHint) -> dict[str, Any]:
        started = time.perf_counter()
        collection = await self._find(tenant, name)
        request = parse_search(body)
        if request.vector is not None:
            query = collection.check_vectors(request.vector[None, :], "vector")[0]
        else:
            assert request.text is not None
            model = request.model or _model_for(body, collection)
            embedded = await self._embeddings.embed_texts(model, [request.text], hint)
            query = collection.check_vectors(embedded.vectors, "text embedding")[0]
        cross = request.rerank not in (None, "exact")
        overfetch = EXACT_RERANK_FACTOR if request.rerank == "exact" else 1
        want = request.candidates if cross else request.k

        def search_and_read() -> tuple[list[Hit], dict[int, ItemRow]]:
            found = collection.search(
                query, want, request.filter, request.min_similarity, overfetch, request.ef
            )
            return found, collection.rows([h.slot for h in found])

        hits, rows = await asyncio.to_thread(search_and_read)  # one hop off the event loop
        rerank_scores: dict[str, float] = {}
        if cross and hits:
            assert request.rerank is not None
            hits, rerank_scores = await self._cross_rerank(request, hits, rows, hint)
        hits = hits[: request.k]
        results = []
        vectors = collection.get([h.key for h in hits]) if request.include_vectors else []
        by_key = {v["id"]: v["vector"] for v in vectors}
        for hit in hits:
            row = rows.get(hit.slot)
            if row is None:  # deleted meanwhile
                continue
            result: dict[str, Any] = {
                "id": hit.key,
                "score": hit.score,
                "metadata": orjson.loads(row.metadata) if row.metadata else None,
            }
            if row.text is not None:
                result["text"] = row.text
            if hit.key in rerank_scores:
                result["rerank_score"] = rerank_scores[hit.key]
            if request.include_vectors:
                result["vector"] = by_key.get(hit.key)
            results.append(result)
        return {"results": results, "took_ms": round((time.perf_counter() - started) * 1000, 3)}

    async def _cross_rerank(
        self, request: SearchRequest, hits: list[Hit], rows: dict[int, Any], hint: TierHint
    ) -> tuple[list[Hit], dict[str, float]]:
        if request.text is None:
            raise InvalidInput("re-ranking with a cross-encoder needs a text query ('text')")
        texts = [rows[h.slot].text if h.slot in rows else None for h in hits]
        if any(t is None for t in texts):
            raise InvalidInput("re-ranking with a cross-encoder needs every candidate's text (upsert 'text')")
        assert request.rerank is not None
        scores = await cross_encode(
            self._embeddings.engine,
            self._embeddings.models,
            request.rerank,
            request.text,
            [t or "" for t in texts],
            hint,
        )
        order = np.argsort(-scores, kind="stable")
        return [hits[i] for i in order], {hits[i].key: float(scores[i]) for i in order}


# -- parsing ---------------------------------------------------------------------------------------


def _name(raw: object) -> str:
    if not isinstance(raw, str) or not NAME.match(raw):
        raise InvalidInput(
            "'name' must be 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit"
        )
    return raw


def _choice(body: Mapping[str, Any], key: str, default: str) -> str:
    value = body.get(key, default)
    if not isinstance(value, str):
        raise InvalidInput(f"'{key}' must be a string")
    return value


def _model_for(body: Mapping[str, Any], collection: Collection) -> str:
    model = body.get("model") or collection.record.model
    if not isinstance(model, str):
        raise InvalidInput(
            f"collection '{collection.record.name}' has no embedding model: give 'model' to embed text"
        )
    return model


def _flat(metadata: str | None) -> dict[str, Any]:
    return filters.flatten(orjson.loads(metadata)) if metadata else {}


def _prepare_items(
    raw: list[Any], collection: Collection
) -> tuple[list[str], list[str | None], list[str | None], list[int], np.ndarray]:
    """Everything an upsert checks before it embeds or writes (off the event loop: large bodies take
    a while). The matrix holds the given vectors, checked; rows of items with text are filled later."""
    keys, metas, texts, given = _parse_items(raw)
    dimension = collection.record.dimension
    matrix = np.empty((len(raw), dimension), dtype=np.float32)
    if given:
        names = [f"items[{i}].vector" for i in given]
        vectors = _vectors([raw[i]["vector"] for i in given], names, dimension)
        matrix[given] = collection.check_vectors(vectors, "items", positions=given)
    return keys, metas, texts, given, matrix


def _parse_items(raw: list[Any]) -> tuple[list[str], list[str | None], list[str | None], list[int]]:
    """Ids, metadata (JSON), texts, and the indices of the items that give a vector."""
    keys: list[str] = []
    metas: list[str | None] = []
    texts: list[str | None] = []
    given: list[int] = []
    seen: set[str] = set()
    for i, item in enumerate(raw):
        where = f"items[{i}]"
        if not isinstance(item, dict):
            raise InvalidInput(f"{where} must be an object")
        key = item.get("id")
        if not isinstance(key, str) or not 1 <= len(key) <= MAX_ID_CHARS:
            raise InvalidInput(f"{where}.id must be a string of 1-{MAX_ID_CHARS} characters")
        if key in seen:
            raise InvalidInput(f"{where}.id '{key}' appears twice in this request")
        seen.add(key)
        metadata = item.get("metadata")
        if metadata is not None and not isinstance(metadata, dict):
            raise InvalidInput(f"{where}.metadata must be a JSON object")
        encoded = orjson.dumps(metadata).decode() if metadata else None
        if encoded is not None and len(encoded) > MAX_METADATA_BYTES:
            raise InvalidInput(f"{where}.metadata is over {MAX_METADATA_BYTES} bytes")
        text = item.get("text")
        if text is not None and (not isinstance(text, str) or not text.strip()):
            raise InvalidInput(f"{where}.text must be a non-empty string")
        if text is not None and len(text) > MAX_TEXT_CHARS:
            raise InvalidInput(f"{where}.text is over {MAX_TEXT_CHARS} characters")
        vector = item.get("vector")
        if vector is None and text is None:
            raise InvalidInput(f"{where} needs a 'vector' or a 'text' to embed")
        if vector is not None:
            if not isinstance(vector, list):
                raise InvalidInput(f"{where}.vector must be a list of numbers")
            given.append(i)
        keys.append(key)
        metas.append(encoded)
        texts.append(text)
    return keys, metas, texts, given


def _vectors(rows: list[Any], names: list[str], dimension: int) -> np.ndarray:
    """The rows as one float32 matrix (one conversion in C for the whole request), or InvalidInput
    naming the first item whose vector is not ``dimension`` numbers."""
    try:
        matrix = np.asarray(rows, dtype=np.float32)
        if matrix.shape == (len(rows), dimension):
            return matrix
    except (ValueError, TypeError):
        pass
    for where, row in zip(names, rows, strict=True):
        if not all(isinstance(x, int | float) and not isinstance(x, bool) for x in row):
            raise InvalidInput(f"{where} must be a list of numbers")
        if len(row) != dimension:
            raise InvalidInput(f"{where} has dimension {len(row)}; the collection holds {dimension}")
    raise InvalidInput(f"{names[0]}: vectors must be lists of numbers")


def parse_search(body: Mapping[str, Any]) -> SearchRequest:
    k = body.get("k", 10)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise InvalidInput(f"'k' must be an integer in 1..{MAX_K}")
    vector, text = body.get("vector"), body.get("text")
    if (vector is None) == (text is None):
        raise InvalidInput(
            "give either 'vector' (a list of numbers) or 'text' (embedded by the collection's model)"
        )
    if text is not None and (not isinstance(text, str) or not text.strip()):
        raise InvalidInput("'text' must be a non-empty string")
    parsed_vector = None
    if vector is not None:
        if not isinstance(vector, list):
            raise InvalidInput("'vector' must be a list of numbers")
        parsed_vector = _vectors([vector], ["'vector'"], len(vector))[0]
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise InvalidInput("'model' must name an embedding model")
    node = filters.parse(body["filter"]) if body.get("filter") is not None else None
    threshold = body.get("min_similarity")
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, int | float)):
        raise InvalidInput("'min_similarity' must be a number")
    rerank, candidates = _rerank(body.get("rerank"), k)
    include = body.get("include_vectors", False)
    if not isinstance(include, bool):
        raise InvalidInput("'include_vectors' must be true or false")
    min_similarity = None if threshold is None else float(threshold)
    ef = body.get("ef")
    if ef is not None and (isinstance(ef, bool) or not isinstance(ef, int) or not 1 <= ef <= MAX_EF):
        raise InvalidInput(f"'ef' must be an integer in 1..{MAX_EF}")
    return SearchRequest(k, parsed_vector, text, model, node, min_similarity, rerank, candidates, include, ef)


def _rerank(raw: object, k: int) -> tuple[str | None, int]:
    """``rerank``: false/absent, true or "exact" (exact re-scoring of 4k candidates), or
    ``{"model": "<cross-encoder>", "candidates": N}``."""
    if raw is None or raw is False:
        return None, k
    if raw is True or raw == "exact":
        return "exact", k
    if isinstance(raw, dict):
        model = raw.get("model")
        if not isinstance(model, str) or not model:
            raise InvalidInput("'rerank.model' must name a cross-encoder model")
        candidates = raw.get("candidates", max(k, CROSS_ENCODER_CANDIDATES))
        if (
            isinstance(candidates, bool)
            or not isinstance(candidates, int)
            or not k <= candidates <= MAX_CROSS_CANDIDATES
        ):
            raise InvalidInput(f"'rerank.candidates' must be an integer in k..{MAX_CROSS_CANDIDATES}")
        unknown = sorted(set(raw) - {"model", "candidates"})
        if unknown:
            raise InvalidInput(f"'rerank' has unknown keys {unknown}")
        return model, candidates
    raise InvalidInput('\'rerank\' must be true, "exact", or {"model": <cross-encoder>, "candidates": N}')
