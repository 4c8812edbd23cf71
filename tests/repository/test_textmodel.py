"""The ``embedding:`` and ``reranker:`` sections of config.yaml."""

from __future__ import annotations

import pytest

from tierserve.errors import InvalidInput
from tierserve.repository.config import ModelConfig
from tierserve.repository.textmodel import DEFAULT_MAX_LENGTH, TextModelConfig


def test_a_model_that_embeds_declares_its_tokenizer_and_length() -> None:
    config = ModelConfig.from_mapping(
        {"embedding": {"tokenizer": "tok.json", "max_length": 128, "dimensions": [256, 64, 64]}}
    )
    assert config.embedding == TextModelConfig("tok.json", 128, None, (64, 256))
    assert config.reranker is None
    assert ModelConfig.from_mapping({}).embedding is None


def test_defaults_and_any_dimension() -> None:
    parsed = TextModelConfig.parse({"dimensions": True}, section="embedding", source="c")
    assert parsed == TextModelConfig("tokenizer.json", DEFAULT_MAX_LENGTH, None, True)


@pytest.mark.parametrize(
    ("section", "raw", "words"),
    [
        ("embedding", "yes", "must be a mapping"),
        ("embedding", {"max_length": 0}, "max_length"),
        ("embedding", {"max_length": True}, "max_length"),
        ("embedding", {"tokenizer": "../secret.json"}, "file name"),
        ("embedding", {"dimensions": [0]}, "dimensions"),
        ("embedding", {"pooling": "mean"}, "unknown keys ['pooling']"),
        ("reranker", {"dimensions": [8]}, "unknown keys ['dimensions']"),
        ("reranker", {"output": 3}, "output"),
    ],
)
def test_bad_sections_fail_the_load_with_a_clear_message(section: str, raw: object, words: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        ModelConfig.from_mapping({section: raw}, source="m/config.yaml")
    assert words in caught.value.message
    assert caught.value.message.startswith(f"m/config.yaml: {section}")
