"""``/v1/embeddings`` and ``/v1/models`` against a real server: the ``openai`` client unchanged, raw
HTTP for what the client does not send, tiers, and OpenAI's error shape."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest

from support.server import RunningServer, start_server
from support.textmodels import MATRYOSHKA, MINILM, write_text_repository
from tierserve.examples.minilm import tokenize

pytestmark = pytest.mark.integration

REFERENCE = Path(__file__).resolve().parents[1] / "fixtures" / "minilm_reference.json"
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    repo = write_text_repository(tmp_path_factory.mktemp("text-repo"))
    with start_server(repo) as running:
        yield running


@pytest.fixture
def client(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0)


@pytest.fixture
def http(server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=60.0) as raw:
        yield raw


def test_the_openai_client_gets_sentence_transformers_embeddings(client: openai.OpenAI) -> None:
    reference = json.loads(REFERENCE.read_text())
    # OpenAI refuses an empty input (400, tested below); sentence-transformers embeds it.
    kept = [i for i, text in enumerate(reference["sentences"]) if text]
    sentences = [reference["sentences"][i] for i in kept]
    expected = np.array(reference["embeddings"])[kept]
    # The client asks for base64 unless told otherwise; both encodings must decode to the same.
    result = client.embeddings.create(model=MINILM, input=sentences)
    as_floats = client.embeddings.create(model=MINILM, input=sentences, encoding_format="float")
    got = np.array([item.embedding for item in result.data])
    assert [item.index for item in result.data] == list(range(len(sentences)))
    np.testing.assert_allclose(got, expected, atol=TOLERANCE)
    np.testing.assert_allclose(got, np.array([i.embedding for i in as_floats.data]), atol=1e-6)
    assert result.model == MINILM
    ids, _ = tokenize(sentences)  # the token count is what the model read, [CLS] and [SEP] included
    assert result.usage.prompt_tokens == result.usage.total_tokens == int((ids != 0).sum())


def test_one_string_and_token_arrays(client: openai.OpenAI, http: httpx.Client) -> None:
    one = client.embeddings.create(model=MINILM, input="Hello world.", encoding_format="float")
    ids, _ = tokenize(["Hello world."])
    row = [int(t) for t in ids[0]]
    flat = client.embeddings.create(model=MINILM, input=row, encoding_format="float")
    nested = client.embeddings.create(model=MINILM, input=[row, row[:3]], encoding_format="float")
    np.testing.assert_allclose(one.data[0].embedding, flat.data[0].embedding, atol=1e-5)
    np.testing.assert_allclose(one.data[0].embedding, nested.data[0].embedding, atol=1e-5)
    assert nested.usage.prompt_tokens == len(row) + 3
    raw = http.post(
        "/v1/embeddings", json={"model": MINILM, "input": "Hello world.", "encoding_format": "base64"}
    )
    decoded = np.frombuffer(base64.b64decode(raw.json()["data"][0]["embedding"]), dtype="<f4")
    np.testing.assert_allclose(decoded, one.data[0].embedding, atol=1e-6)


def test_long_inputs_are_truncated_to_the_models_maximum(client: openai.OpenAI) -> None:
    long_text = "tierserve " * 2000
    result = client.embeddings.create(model=MINILM, input=[long_text, "short"])
    assert result.usage.prompt_tokens == 256 + 3
    ids, _ = tokenize([long_text])  # sentence-transformers truncates at 256 the same way
    raw = client.embeddings.create(model=MINILM, input=[[int(t) for t in ids[0]]])
    np.testing.assert_allclose(result.data[0].embedding, raw.data[0].embedding, atol=1e-5)


def test_dimensions_truncate_and_renormalise_where_the_model_allows(client: openai.OpenAI) -> None:
    full = client.embeddings.create(model=MATRYOSHKA, input="Hello world.")
    short = client.embeddings.create(model=MATRYOSHKA, input="Hello world.", dimensions=64)
    head = np.array(full.data[0].embedding[:64])
    assert len(short.data[0].embedding) == 64
    np.testing.assert_allclose(short.data[0].embedding, head / np.linalg.norm(head), atol=1e-5)
    same = client.embeddings.create(model=MINILM, input="Hello world.", dimensions=384)
    assert len(same.data[0].embedding) == 384
    for model, dimensions, words in [(MINILM, 128, "does not support"), (MATRYOSHKA, 100, "64, 128")]:
        with pytest.raises(openai.BadRequestError) as caught:
            client.embeddings.create(model=model, input="x", dimensions=dimensions)
        assert words in caught.value.message


def test_models_lists_the_models_that_embed(client: openai.OpenAI, http: httpx.Client) -> None:
    assert sorted(m.id for m in client.models.list()) == [MINILM, MATRYOSHKA]
    assert client.models.retrieve(MINILM).id == MINILM
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("simple")  # served, but it does not embed


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"model": "nope", "input": "x"}, 404, "unknown model"),
        ({"model": "simple", "input": "x"}, 400, "does not embed"),
        ({"model": MINILM, "input": ""}, 400, "empty"),
        ({"model": MINILM, "input": ["ok", "  "]}, 400, "input[1] is empty"),
        ({"model": MINILM, "input": []}, 400, "empty"),
        ({"model": MINILM, "input": [[]]}, 400, "empty token array"),
        ({"model": MINILM, "input": [10**9]}, 400, "vocabulary"),
        ({"model": MINILM, "input": [1, "a"]}, 400, "'input' must be"),
        ({"model": MINILM}, 400, "'input' is required"),
        ({"input": "x"}, 400, "'model'"),
        ({"model": MINILM, "input": "x", "encoding_format": "int8"}, 400, "encoding_format"),
        ({"model": MINILM, "input": "x", "dimensions": "64"}, 400, "dimensions"),
        ({"model": MINILM, "input": "x", "tier": "platinum"}, 400, "platinum"),
        ({"model": MINILM, "input": ["x"] * 2049}, 400, "at most 2048"),
    ],
)
def test_bad_requests_answer_in_openais_error_shape(
    http: httpx.Client, body: dict[str, object], status: int, words: str
) -> None:
    response = http.post("/v1/embeddings", json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert words in error["message"]
    assert error["type"] == ("invalid_request_error" if status in (400, 404) else "server_error")


def test_malformed_json_is_a_400_in_openais_shape(http: httpx.Client) -> None:
    response = http.post("/v1/embeddings", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert "JSON" in response.json()["error"]["message"]


def test_embeddings_take_the_tier_they_name(http: httpx.Client) -> None:
    def gold_requests() -> int:
        stats = http.get(f"/v2/models/{MINILM}/stats").json()["model_stats"][0]["tier_stats"]
        return sum(int(outcome["count"]) for outcome in stats.get("gold", {}).values())

    before = gold_requests()
    by_header = http.post("/v1/embeddings", json={"model": MINILM, "input": "a"}, headers={"X-Tier": "gold"})
    by_body = http.post("/v1/embeddings", json={"model": MINILM, "input": "b", "tier": "gold"})
    # Served, or refused at once when this (loaded) machine cannot make gold's 50 ms: gold either way.
    for response in (by_header, by_body):
        assert response.status_code in (200, 503), response.text
        if response.status_code == 503:
            assert "gold" in response.json()["error"]["message"]
            assert response.headers["retry-after"]
    assert gold_requests() == before + 2
