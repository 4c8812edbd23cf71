"""Re-ranking with a cross-encoder: a model that reads (query, document) pairs and scores each."""

from __future__ import annotations

import numpy as np

from tierserve.engine.engine import Engine
from tierserve.retrieval.inference import TierHint, run_rows
from tierserve.retrieval.textmodels import TextModels


async def cross_encode(
    engine: Engine, models: TextModels, model_name: str, query: str, documents: list[str], hint: TierHint
) -> np.ndarray:
    """One score per document (higher: more relevant), from the model's single output per pair."""
    model = models.reranker(model_name)
    encoded = model.tokenizer.encode_pairs([(query, document) for document in documents])
    scores = await run_rows(
        engine, model, [ids for ids, _ in encoded], hint, type_rows=[types for _, types in encoded]
    )
    return scores.reshape(len(documents), -1)[:, 0]
