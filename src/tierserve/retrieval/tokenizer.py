"""Server-side tokenization from a model's ``tokenizer.json`` (Hugging Face ``tokenizers``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tokenizers

from tierserve.errors import InvalidInput


class TextTokenizer:
    """Encodes texts (or query/document pairs) to token ids, truncated to ``max_length``; no padding
    (each batch is padded to its own longest row by ``pad``)."""

    def __init__(self, path: Path, max_length: int) -> None:
        try:
            tokenizer = tokenizers.Tokenizer.from_file(str(path))
        except Exception as exc:  # the library raises a bare Exception on a malformed file
            raise InvalidInput(f"cannot load the tokenizer {path}: {exc}") from None
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length=max_length)
        self._tokenizer = tokenizer
        self.max_length = max_length
        self.vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)

    def encode(self, texts: list[str]) -> list[list[int]]:
        return [encoding.ids for encoding in self._tokenizer.encode_batch(texts)]

    def encode_pairs(self, pairs: list[tuple[str, str]]) -> list[tuple[list[int], list[int]]]:
        """Token ids and segment ids (0: first text, 1: second) of each pair, as cross-encoders read them."""
        return [(e.ids, e.type_ids) for e in self._tokenizer.encode_batch(pairs)]

    def check_ids(self, rows: list[list[int]]) -> list[list[int]]:
        """Token arrays given by the client: in the vocabulary, truncated like text."""
        for i, row in enumerate(rows):
            if not row:
                raise InvalidInput(f"input[{i}] is an empty token array")
            low, high = min(row), max(row)
            if low < 0 or high >= self.vocab_size:
                raise InvalidInput(
                    f"input[{i}] holds token id {low if low < 0 else high} outside this model's "
                    f"vocabulary 0..{self.vocab_size - 1}"
                )
        return [row[: self.max_length] for row in rows]


def pad(rows: list[list[int]], pad_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """int64 ids and attention mask, [len(rows), longest row]."""
    width = max(len(row) for row in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = row
        mask[i, : len(row)] = 1
    return ids, mask
