"""Vector collections against a real server: tenants with API keys, text and vectors, filters,
re-ranking (the example cross-encoder), bad input, reads during writes, and SIGKILL survival."""

from __future__ import annotations

import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest

from security.servers import Key, make_key
from support.server import RunningServer, start_server
from support.textmodels import MINILM, write_text_repository

pytestmark = pytest.mark.integration

CROSS_ENCODER = "tiny-cross-encoder"
DOCUMENTS = [
    ("cat", "The cat sat on the warm mat by the door.", {"topic": "pets", "year": 2021}),
    ("dog", "A dog chased the ball across the park.", {"topic": "pets", "year": 2023}),
    ("gpu", "GPUs serve inference requests quickly.", {"topic": "tech", "year": 2024}),
    ("cpu", "A CPU pool is cheaper for small models.", {"topic": "tech", "year": 2022}),
    ("rain", "Heavy rain is expected in Berlin tomorrow.", {"topic": "weather", "year": 2024}),
]


@dataclass
class Tenants:
    server: RunningServer
    acme: Key
    globex: Key


@pytest.fixture(scope="module")
def tenants(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tenants]:
    root = tmp_path_factory.mktemp("collections")
    repo = write_text_repository(root)
    state = Path(tempfile.mkdtemp(prefix="tierserve-collections-"))
    acme = make_key("acme", "user", state_dir=state)
    globex = make_key("globex", "user", state_dir=state)
    try:
        with start_server(repo, extra_args=["--state-dir", str(state)]) as server:
            yield Tenants(server, acme, globex)
    finally:
        shutil.rmtree(state, ignore_errors=True)


def _client(tenants: Tenants, key: Key) -> httpx.Client:
    return httpx.Client(base_url=tenants.server.base_url, headers=key.headers, timeout=60.0)


@pytest.fixture
def acme(tenants: Tenants) -> Iterator[httpx.Client]:
    with _client(tenants, tenants.acme) as client:
        yield client


@pytest.fixture
def globex(tenants: Tenants) -> Iterator[httpx.Client]:
    with _client(tenants, tenants.globex) as client:
        yield client


def _ok(response: httpx.Response) -> Any:
    assert response.is_success, f"{response.status_code}: {response.text}"
    return response.json()


def _create_documents(client: httpx.Client, name: str, **extra: Any) -> None:
    _ok(client.post("/v1/collections", json={"name": name, "model": MINILM, **extra}))
    items = [{"id": key, "text": text, "metadata": meta} for key, text, meta in DOCUMENTS]
    assert _ok(client.post(f"/v1/collections/{name}/upsert", json={"items": items}))["count"] == len(
        DOCUMENTS
    )


def _ids(found: dict[str, Any]) -> list[str]:
    return [r["id"] for r in found["results"]]


def test_text_search_filters_and_thresholds(acme: httpx.Client) -> None:
    _create_documents(acme, "docs", precision="i8")
    described = _ok(acme.get("/v1/collections/docs"))
    assert described["dimension"] == 384 and described["count"] == 5 and described["precision"] == "i8"
    found = _ok(acme.post("/v1/collections/docs/search", json={"text": "a kitten on a rug", "k": 2}))
    assert _ids(found)[0] == "cat"
    assert found["results"][0]["metadata"] == {"topic": "pets", "year": 2021}
    assert found["results"][0]["text"] == DOCUMENTS[0][1]
    assert found["results"][0]["score"] >= found["results"][1]["score"]
    query = {"text": "graphics cards for serving models", "k": 5}
    tech = _ok(acme.post("/v1/collections/docs/search", json={**query, "filter": {"topic": "tech"}}))
    assert sorted(_ids(tech)) == ["cpu", "gpu"]
    recent = {"year": {"$gte": 2023}, "topic": {"$in": ["pets", "weather"]}}
    assert sorted(_ids(_ok(acme.post("/v1/collections/docs/search", json={**query, "filter": recent})))) == [
        "dog",
        "rain",
    ]
    strict = _ok(acme.post("/v1/collections/docs/search", json={**query, "min_similarity": 0.3}))
    assert all(r["score"] >= 0.3 for r in strict["results"]) and len(strict["results"]) < 5
    # The same embedding through the openai client, searched as a vector, finds the same.
    vector = (
        openai.OpenAI(
            base_url=f"{acme.base_url}/v1", api_key=acme.headers["authorization"].split()[1], max_retries=0
        )
        .embeddings.create(model=MINILM, input="a kitten on a rug")
        .data[0]
        .embedding
    )
    by_vector = _ok(acme.post("/v1/collections/docs/search", json={"vector": vector, "k": 2}))
    assert _ids(by_vector) == _ids(found)


def test_rerank_exact_and_with_the_cross_encoder(acme: httpx.Client) -> None:
    _create_documents(acme, "rerank")
    query = {"text": "Berlin rain tomorrow", "k": 3}
    exact = _ok(acme.post("/v1/collections/rerank/search", json={**query, "rerank": "exact"}))
    assert _ids(exact)[0] == "rain"
    crossed = _ok(
        acme.post(
            "/v1/collections/rerank/search",
            json={
                "text": "the ball the dog chased",
                "k": 2,
                "rerank": {"model": CROSS_ENCODER, "candidates": 5},
            },
        )
    )
    # The cross-encoder scores word overlap: the document sharing most words comes first.
    assert _ids(crossed)[0] == "dog"
    scores = [r["rerank_score"] for r in crossed["results"]]
    assert scores == sorted(scores, reverse=True) and scores[0] > 0.5
    refused = acme.post(
        "/v1/collections/rerank/search", json={"vector": [0.1] * 384, "rerank": {"model": CROSS_ENCODER}}
    )
    assert refused.status_code == 400 and "text query" in refused.json()["error"]
    not_a_reranker = acme.post("/v1/collections/rerank/search", json={**query, "rerank": {"model": MINILM}})
    assert not_a_reranker.status_code == 400 and "not a re-ranker" in not_a_reranker.json()["error"]


def test_another_tenants_collection_is_not_found(acme: httpx.Client, globex: httpx.Client) -> None:
    _ok(acme.post("/v1/collections", json={"name": "private", "dimension": 4}))
    _ok(acme.post("/v1/collections/private/upsert", json={"items": [{"id": "a", "vector": [1, 0, 0, 0]}]}))
    for method, path, body in [
        ("GET", "/v1/collections/private", None),
        ("POST", "/v1/collections/private/search", {"vector": [1, 0, 0, 0]}),
        ("POST", "/v1/collections/private/upsert", {"items": [{"id": "b", "vector": [0, 1, 0, 0]}]}),
        ("GET", "/v1/collections/private/items/a", None),
        ("DELETE", "/v1/collections/private", None),
    ]:
        response = globex.request(method, path, json=body)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json() == {"error": "collection 'private' is not found"}
    assert "private" not in [c["name"] for c in _ok(globex.get("/v1/collections"))["collections"]]
    # The same name is free for the other tenant, and both stay apart.
    _ok(globex.post("/v1/collections", json={"name": "private", "dimension": 4}))
    assert _ok(globex.get("/v1/collections/private"))["count"] == 0
    assert _ok(acme.get("/v1/collections/private"))["count"] == 1
    anonymous = httpx.post(f"{acme.base_url}/v1/collections/private/search", json={"vector": [1, 0, 0, 0]})
    assert anonymous.status_code == 401
    embeddings = httpx.post(f"{acme.base_url}/v1/embeddings", json={"model": MINILM, "input": "x"})
    assert embeddings.status_code == 401 and embeddings.json()["error"]["type"] == "authentication_error"


def test_get_delete_by_id_and_by_filter(acme: httpx.Client) -> None:
    _create_documents(acme, "edits")
    item = _ok(acme.get("/v1/collections/edits/items/gpu"))
    assert item["metadata"]["topic"] == "tech" and len(item["vector"]) == 384
    assert acme.get("/v1/collections/edits/items/nope").status_code == 404
    assert _ok(acme.post("/v1/collections/edits/delete", json={"ids": ["gpu", "nope"]}))["deleted"] == 1
    assert _ok(acme.post("/v1/collections/edits/delete", json={"filter": {"topic": "pets"}}))["deleted"] == 2
    left = _ok(acme.post("/v1/collections/edits/search", json={"text": "anything", "k": 10}))
    assert sorted(_ids(left)) == ["cpu", "rain"]
    _ok(acme.delete("/v1/collections/edits"))
    assert acme.get("/v1/collections/edits").status_code == 404


@pytest.mark.parametrize(
    ("path", "body", "status", "words"),
    [
        ("/v1/collections", {"name": "x", "dimension": 0}, 400, "'dimension'"),
        ("/v1/collections", {"name": "../etc", "dimension": 4}, 400, "'name'"),
        ("/v1/collections", {"name": "x", "dimension": 4, "metric": "manhattan"}, 400, "metric"),
        ("/v1/collections", {"name": "x", "dimension": 4, "metric": "dot", "precision": "i8"}, 400, "cosine"),
        ("/v1/collections", {"name": "x", "model": "nope"}, 404, "unknown model"),
        ("/v1/collections", {"name": "bad", "dimension": 4}, 409, "already exists"),
        ("/v1/collections/bad/upsert", {"items": [{"id": "a", "vector": [1, 2, 3]}]}, 400, "dimension 3"),
        ("/v1/collections/bad/upsert", {"items": [{"id": "a", "vector": [0, 0, 0, 0]}]}, 400, "all zeros"),
        ("/v1/collections/bad/upsert", {"items": [{"id": "a", "text": "words"}]}, 400, "no embedding model"),
        ("/v1/collections/bad/upsert", {"items": [{"id": "a"}]}, 400, "needs a 'vector' or a 'text'"),
        ("/v1/collections/bad/upsert", {"items": []}, 400, "non-empty"),
        (
            "/v1/collections/bad/upsert",
            {"items": [{"id": "a", "vector": [1, 0, 0, 0], "metadata": [1]}]},
            400,
            "object",
        ),
        ("/v1/collections/nope/upsert", {"items": [{"id": "a", "vector": [1, 0, 0, 0]}]}, 404, "not found"),
        ("/v1/collections/bad/search", {"vector": [1, 0, 0, 0], "k": 0}, 400, "'k'"),
        ("/v1/collections/bad/search", {"vector": [1, 0, 0, 0], "k": 100000}, 400, "'k'"),
        ("/v1/collections/bad/search", {"vector": [1, 0, 0, 0], "ef": 0}, 400, "'ef'"),
        (
            "/v1/collections/bad/search",
            {"vector": [1, 0, 0, 0], "filter": {"color": "red"}},
            400,
            "['color']",
        ),
        (
            "/v1/collections/bad/search",
            {"vector": [1, 0, 0, 0], "filter": {"n": {"$gt": "1"}}},
            400,
            "number",
        ),
        ("/v1/collections/bad/search", {"text": ""}, 400, "non-empty"),
        ("/v1/collections/bad/search", {}, 400, "either 'vector'"),
        ("/v1/collections/bad/search", {"vector": [1, 0, 0]}, 400, "dimension 3"),
        ("/v1/collections/bad/delete", {}, 400, "either 'ids'"),
    ],
)
def test_bad_input_is_a_clear_4xx(acme: httpx.Client, path: str, body: Any, status: int, words: str) -> None:
    if acme.get("/v1/collections/bad").status_code == 404:
        _ok(acme.post("/v1/collections", json={"name": "bad", "dimension": 4}))
        _ok(
            acme.post(
                "/v1/collections/bad/upsert",
                json={"items": [{"id": "z", "vector": [0, 0, 1, 0], "metadata": {"n": 1}}]},
            )
        )
    response = acme.post(path, json=body)
    assert response.status_code == status, response.text
    assert words in response.json()["error"]


def test_a_bad_item_anywhere_writes_nothing(acme: httpx.Client) -> None:
    _ok(acme.post("/v1/collections", json={"name": "atomic", "dimension": 3}))
    good: list[dict[str, Any]] = [{"id": f"i{n}", "vector": [1, n, 0]} for n in range(5)]
    for bad, words in [
        ({"id": "last", "vector": [1, 0]}, "items[5].vector has dimension 2"),
        ({"id": "last", "vector": [0, 0, 0]}, "items[5] is all zeros"),
        ({"id": "i0", "vector": [1, 0, 0]}, "items[5].id 'i0' appears twice"),
        ({"id": "last", "vector": [1, 0, 0], "metadata": "x"}, "items[5].metadata"),
    ]:
        response = acme.post("/v1/collections/atomic/upsert", json={"items": [*good, bad]})
        assert response.status_code == 400 and words in response.json()["error"], response.text
    # JSON has no NaN or infinity: such numbers are refused at parsing.
    for raw in (
        b'{"items": [{"id": "x", "vector": [NaN, 0, 0]}]}',
        b'{"items": [{"id": "x", "vector": [1e400, 0, 0]}]}',
    ):
        response = acme.post(
            "/v1/collections/atomic/upsert", content=raw, headers={"content-type": "application/json"}
        )
        assert response.status_code == 400 and "JSON" in response.json()["error"]
    assert _ok(acme.get("/v1/collections/atomic"))["count"] == 0
    assert acme.get("/v1/collections/atomic/items/i0").status_code == 404


def test_searches_are_served_while_writes_go_on(acme: httpx.Client, tenants: Tenants) -> None:
    dim = 32
    _ok(acme.post("/v1/collections", json={"name": "busy", "dimension": dim, "precision": "f16"}))
    rng = np.random.default_rng(3)
    batches = [rng.standard_normal((200, dim)).tolist() for _ in range(15)]
    errors: list[str] = []

    def write() -> None:
        with _client(tenants, tenants.acme) as writer:
            for b, batch in enumerate(batches):
                items = [
                    {"id": f"b{b}-{i}", "vector": v, "metadata": {"batch": b}} for i, v in enumerate(batch)
                ]
                response = writer.post("/v1/collections/busy/upsert", json={"items": items})
                if not response.is_success:
                    errors.append(response.text)

    writer = threading.Thread(target=write)
    writer.start()
    searches = 0
    while writer.is_alive() or searches < 5:
        response = acme.post("/v1/collections/busy/search", json={"vector": batches[0][0], "k": 5})
        assert response.status_code == 200, response.text
        searches += 1
    writer.join(120)
    assert not errors
    assert _ok(acme.get("/v1/collections/busy"))["count"] == 3000
    top = _ok(acme.post("/v1/collections/busy/search", json={"vector": batches[0][0], "k": 1}))
    assert _ids(top) == ["b0-0"]


def test_acknowledged_writes_survive_sigkill(example_repo: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    args = ["--state-dir", str(state)]
    rng = np.random.default_rng(11)
    vectors = rng.standard_normal((500, 8))
    with (
        start_server(example_repo, extra_args=args) as server,
        httpx.Client(base_url=server.base_url, timeout=60) as http,
    ):
        _ok(http.post("/v1/collections", json={"name": "durable", "dimension": 8, "precision": "i8"}))
        for start in range(0, 500, 100):
            items = [
                {"id": f"v{i}", "vector": vectors[i].tolist(), "metadata": {"i": i}}
                for i in range(start, start + 100)
            ]
            _ok(http.post("/v1/collections/durable/upsert", json={"items": items}))
        _ok(http.post("/v1/collections/durable/delete", json={"ids": ["v0", "v1"]}))
        server.stop(signal.SIGKILL)
    with (
        start_server(example_repo, extra_args=args) as server,
        httpx.Client(base_url=server.base_url, timeout=60) as http,
    ):
        assert _ok(http.get("/v1/collections/durable"))["count"] == 498
        exported = http.get("/metrics").text
        assert 'tierserve_collection_items{collection="durable",tenant=""} 498.0' in exported
        assert http.get("/v1/collections/durable/items/v0").status_code == 404
        assert _ok(http.get("/v1/collections/durable/items/v499"))["metadata"] == {"i": 499}
        for i in (2, 250, 499):
            found = _ok(
                http.post("/v1/collections/durable/search", json={"vector": vectors[i].tolist(), "k": 1})
            )
            assert _ids(found) == [f"v{i}"]
        selective = {"vector": vectors[7].tolist(), "k": 3, "filter": {"i": {"$in": [7, 8, 9, 300]}}}
        assert len(_ok(http.post("/v1/collections/durable/search", json=selective))["results"]) == 3
