"""Protocol-neutral request and response objects passed between the API and the engine."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tierserve.datatypes import Datatype
from tierserve.rollout.split import RouteKeys


@dataclass
class InputTensor:
    name: str
    datatype: Datatype
    array: np.ndarray


@dataclass
class RequestedOutput:
    name: str
    binary: bool | None = None  # None: the request's default
    # Triton's extensions, applied by the API layer to the engine's outputs: the top-k classes
    # (0: the tensor itself), and the shared-memory region (name, offset, byte size) to write to.
    classification: int = 0
    shared_memory: tuple[str, int, int] | None = None


@dataclass(frozen=True)
class Decision:
    """What the engine decided for one request: the model version that served it, its tier, the pool
    that ran it and what that cost (dollars). ``pool`` and ``cost`` stay None when no pool ran it:
    answered from the result cache, or refused or failed before a pool finished it."""

    model: str
    version: int
    tier: str
    pool: str | None = None
    cost: float | None = None


@dataclass
class InferRequest:
    inputs: list[InputTensor]
    id: str | None = None
    outputs: list[RequestedOutput] | None = None  # None: every output of the model
    parameters: dict[str, Any] = field(default_factory=dict)
    binary_output: bool = False  # the default for outputs that do not say
    tier: str | None = None  # from the X-Tier header; the ``tier`` parameter wins over it
    key_tier: str | None = None  # the API key's tier (see ``TierTable.for_request`` for the order)
    # The caller's tenant ("" while authentication is off): scopes cached answers; budgets and cost.
    tenant: str = ""
    arrival: float | None = None  # when it reached the server (Engine.clock()); its deadline counts from it
    routing: RouteKeys | None = None  # what a rollout may split on (tenant, key, headers)
    # Written by the engine as it decides (tier first, then pool and cost), so that a request that
    # fails still says what was decided for it; a response carries the final one too.
    decision: Decision | None = None


@dataclass
class OutputTensor:
    name: str
    datatype: Datatype
    array: np.ndarray
    binary: bool


@dataclass
class InferResponse:
    model_name: str
    model_version: str
    outputs: list[OutputTensor]
    id: str | None = None
    decision: Decision | None = None  # what the engine decided (version, tier, pool, cost)
