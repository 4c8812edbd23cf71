"""The ``embedding:`` and ``reranker:`` sections of a model's ``config.yaml``: how text reaches it.

A model that embeds text declares its tokenizer (a Hugging Face ``tokenizer.json``, looked up in
the version directory, then the model directory) and the longest input it takes::

    embedding:
      tokenizer: tokenizer.json
      max_length: 256             # longer inputs are truncated to this many tokens
      output: sentence_embedding  # default: the model's only output
      dimensions: [128, 256]      # sizes a request may truncate to (re-normalised); omitted: none
                                  # (true: any size up to the model's own)

A cross-encoder that scores (query, document) pairs declares ``reranker:`` with the same keys
(``dimensions`` aside); its output holds one score per pair.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tierserve.errors import InvalidInput

DEFAULT_MAX_LENGTH = 512


@dataclass(frozen=True)
class TextModelConfig:
    tokenizer: str
    max_length: int = DEFAULT_MAX_LENGTH
    output: str | None = None
    dimensions: tuple[int, ...] | bool = False  # True: any size up to the model's own

    @classmethod
    def parse(cls, raw: object, *, section: str, source: str) -> TextModelConfig | None:
        if raw is None:
            return None
        where = f"{source}: {section}"
        if not isinstance(raw, Mapping):
            raise InvalidInput(f"{where} must be a mapping (tokenizer, max_length, output)")
        known = {"tokenizer", "max_length", "output"} | ({"dimensions"} if section == "embedding" else set())
        unknown = sorted(set(raw) - known)
        if unknown:
            raise InvalidInput(f"{where}: unknown keys {unknown}; known keys are {sorted(known)}")
        tokenizer = raw.get("tokenizer", "tokenizer.json")
        if not isinstance(tokenizer, str) or not tokenizer or "/" in tokenizer or "\\" in tokenizer:
            raise InvalidInput(f"{where}.tokenizer must be a file name in the model's directory")
        max_length = raw.get("max_length", DEFAULT_MAX_LENGTH)
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
            raise InvalidInput(f"{where}.max_length must be a positive integer, got {max_length!r}")
        output = raw.get("output")
        if output is not None and not isinstance(output, str):
            raise InvalidInput(f"{where}.output must be an output name")
        return cls(tokenizer, max_length, output, _dimensions(raw.get("dimensions", False), where))


def _dimensions(raw: Any, where: str) -> tuple[int, ...] | bool:
    if isinstance(raw, bool):
        return raw
    if (
        isinstance(raw, list)
        and raw
        and all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in raw)
    ):
        return tuple(sorted(set(raw)))
    raise InvalidInput(f"{where}.dimensions must be true, false or a list of positive integers")
