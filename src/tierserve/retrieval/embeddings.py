"""Text (or token arrays) to embeddings, with OpenAI's ``dimensions``: truncate, then re-normalise."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tierserve.engine.engine import Engine
from tierserve.errors import InvalidInput
from tierserve.retrieval.inference import TierHint, run_rows
from tierserve.retrieval.textmodels import TextModel, TextModels

MAX_INPUTS = 2048  # OpenAI's limit of inputs per request


@dataclass(frozen=True)
class Embedded:
    model: str
    vectors: np.ndarray  # float32 [inputs, dimensions]
    tokens: int  # tokens the model read (after truncation)


class EmbeddingService:
    def __init__(self, engine: Engine, models: TextModels | None = None) -> None:
        self.engine = engine
        self.models = models or TextModels(engine)

    async def embed_texts(
        self, model_name: str, texts: list[str], hint: TierHint, dimensions: int | None = None
    ) -> Embedded:
        check_count(len(texts))
        for i, text in enumerate(texts):
            if not text.strip():
                raise InvalidInput(f"input[{i}] is empty; every input must contain text")
        model = self.models.embedder(model_name)
        return await self._embed(model, model.tokenizer.encode(texts), hint, dimensions)

    async def embed_tokens(
        self, model_name: str, rows: list[list[int]], hint: TierHint, dimensions: int | None = None
    ) -> Embedded:
        check_count(len(rows))
        model = self.models.embedder(model_name)
        return await self._embed(model, model.tokenizer.check_ids(rows), hint, dimensions)

    async def _embed(
        self, model: TextModel, rows: list[list[int]], hint: TierHint, dimensions: int | None
    ) -> Embedded:
        wanted = check_dimensions(model, dimensions)  # before any work: a bad request costs nothing
        vectors = await run_rows(self.engine, model, rows, hint)
        if vectors.ndim != 2:
            raise InvalidInput(f"model '{model.name}' output '{model.output}' is not one vector per input")
        if wanted is not None and wanted < vectors.shape[1]:
            vectors = truncate(vectors, wanted)
        return Embedded(model.name, vectors, sum(len(row) for row in rows))


def check_count(count: int) -> None:
    if count == 0:
        raise InvalidInput("input is empty; give a string, a list of strings or token arrays")
    if count > MAX_INPUTS:
        raise InvalidInput(f"{count} inputs in one request; at most {MAX_INPUTS}")


def check_dimensions(model: TextModel, dimensions: int | None) -> int | None:
    if dimensions is None or dimensions == model.width:
        return None
    allowed = model.config.dimensions
    if isinstance(dimensions, bool) or not isinstance(dimensions, int) or dimensions < 1:
        raise InvalidInput("dimensions must be a positive integer")
    if model.width is not None and dimensions > model.width:
        raise InvalidInput(f"dimensions {dimensions} exceeds model '{model.name}''s {model.width}")
    if allowed is False:
        raise InvalidInput(
            f"model '{model.name}' does not support 'dimensions' (it was not trained for truncated "
            "embeddings; its config.yaml would list them under embedding.dimensions)"
        )
    if isinstance(allowed, tuple) and dimensions not in allowed:
        raise InvalidInput(f"model '{model.name}' supports dimensions {list(allowed)}, not {dimensions}")
    return dimensions


def truncate(vectors: np.ndarray, dimensions: int) -> np.ndarray:
    """The first ``dimensions`` components, re-normalised to unit length (Matryoshka embeddings)."""
    head = np.ascontiguousarray(vectors[:, :dimensions])
    norms = np.linalg.norm(head, axis=1, keepdims=True)
    normalised: np.ndarray = (head / np.maximum(norms, 1e-12)).astype(np.float32)
    return normalised
