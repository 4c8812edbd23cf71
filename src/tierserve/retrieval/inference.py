"""Token rows through the engine: chunked to the model's batch size, each chunk one engine request,
so that text takes the same tiers, scheduler, routing, cache and statistics as V2 inference."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tierserve.engine.engine import Engine
from tierserve.engine.request import Decision, InferRequest, InputTensor, RequestedOutput
from tierserve.errors import InferenceFailed
from tierserve.retrieval.textmodels import ATTENTION_MASK, INPUT_IDS, TOKEN_TYPE_IDS, TextModel
from tierserve.retrieval.tokenizer import pad


@dataclass(frozen=True)
class TierHint:
    """What the caller said about its tier: the X-Tier header, V2-style ``parameters`` (``tier``,
    ``priority``, ``timeout``) and the key's tier, weighed as on V2 (``TierTable.for_request``)."""

    tier: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    tenant: str = ""  # scopes result-cache entries, as on V2
    key_tier: str | None = None
    decided: Callable[[Decision], None] | None = None  # told what the engine decided for each chunk


async def run_rows(
    engine: Engine,
    model: TextModel,
    rows: list[list[int]],
    hint: TierHint,
    type_rows: list[list[int]] | None = None,
) -> np.ndarray:
    """The model's output for each token row, in order (float32, [len(rows), ...])."""
    # Similar lengths share a chunk, so little of each chunk is padding.
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    chunks = [order[i : i + model.max_rows] for i in range(0, len(order), model.max_rows)]
    results = await asyncio.gather(
        *(_run_chunk(engine, model, [rows[i] for i in chunk], type_rows, chunk, hint) for chunk in chunks)
    )
    first = results[0]
    out = np.empty((len(rows), *first.shape[1:]), dtype=np.float32)
    for chunk, result in zip(chunks, results, strict=True):
        out[chunk] = result
    return out


async def _run_chunk(
    engine: Engine,
    model: TextModel,
    rows: list[list[int]],
    type_rows: list[list[int]] | None,
    chunk: list[int],
    hint: TierHint,
) -> np.ndarray:
    ids, mask = pad(rows)
    feeds = {INPUT_IDS: ids, ATTENTION_MASK: mask}
    if TOKEN_TYPE_IDS in model.input_types:
        types = np.zeros_like(ids)
        if type_rows is not None:
            for r, i in enumerate(chunk):
                types[r, : len(type_rows[i])] = type_rows[i]
        feeds[TOKEN_TYPE_IDS] = types
    request = InferRequest(
        inputs=[
            InputTensor(
                name, model.input_types[name], array.astype(model.input_types[name].numpy, copy=False)
            )
            for name, array in feeds.items()
        ],
        outputs=[RequestedOutput(model.output)],
        parameters=dict(hint.parameters),
        tier=hint.tier,
        key_tier=hint.key_tier,
        tenant=hint.tenant,
    )
    response = await engine.infer(model.deployment, request)
    if hint.decided is not None and response.decision is not None:
        hint.decided(response.decision)
    (output,) = response.outputs
    array = np.asarray(output.array, dtype=np.float32)
    if array.shape[0] != len(rows):
        raise InferenceFailed(f"model '{model.name}' returned {array.shape[0]} rows for {len(rows)} inputs")
    return array
