"""Truncated embeddings and the checks made before any work is queued."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, cast

import numpy as np
import pytest

from tierserve.errors import InvalidInput
from tierserve.repository.textmodel import TextModelConfig
from tierserve.retrieval.embeddings import MAX_INPUTS, check_count, check_dimensions, truncate
from tierserve.retrieval.textmodels import TextModel


def _model(dimensions: tuple[int, ...] | bool, width: int | None = 8) -> TextModel:
    config = TextModelConfig("tokenizer.json", 16, None, dimensions)
    fields: dict[str, Any] = {"deployment": None, "tokenizer": None, "input_types": {}}
    return TextModel(name="m", config=config, output="y", width=width, **fields)


def test_truncation_keeps_the_head_at_unit_length() -> None:
    vectors = np.array([[3.0, 4.0, 12.0], [0.0, 0.0, 1.0]], dtype=np.float32)
    short = truncate(vectors, 2)
    np.testing.assert_allclose(short, [[0.6, 0.8], [0.0, 0.0]], atol=1e-7)
    assert short.dtype == np.float32


def test_dimensions_are_checked_against_what_the_model_allows() -> None:
    listed = _model((4, 6))
    assert check_dimensions(listed, None) is None
    assert check_dimensions(listed, 8) is None  # the model's own size: nothing to do
    assert check_dimensions(listed, 4) == 4
    assert check_dimensions(_model(True), 3) == 3
    for model, dimensions, words in [
        (listed, 5, "supports dimensions [4, 6]"),
        (listed, 9, "exceeds"),
        (listed, 0, "positive"),
        (_model(False), 4, "does not support"),
        (replace(listed, width=None), cast(int, True), "positive"),
    ]:
        with pytest.raises(InvalidInput) as caught:
            check_dimensions(model, dimensions)
        assert words in caught.value.message


def test_input_counts_are_bounded() -> None:
    check_count(1)
    check_count(MAX_INPUTS)
    for count in (0, MAX_INPUTS + 1):
        with pytest.raises(InvalidInput):
            check_count(count)
