"""The data plane on a real registry and real backends: what it decided comes back with the response
(and stays on the request when it fails), and metrics, statistics and budgets are told the same."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tierserve.budgets.policy import BudgetBook
from tierserve.datatypes import from_name
from tierserve.engine.budgeting import Budgeting
from tierserve.engine.dataplane import DataPlane
from tierserve.engine.pools import PoolKind, PoolSpec
from tierserve.engine.registry import ModelRegistry
from tierserve.engine.request import Decision, InferRequest, InputTensor
from tierserve.errors import InvalidInput, Unavailable
from tierserve.examples.basic import build_simple
from tierserve.observability.metrics import Metrics
from tierserve.repository.repository import ModelRepository
from tierserve.scheduler.tiers import TierTable

CPU = PoolSpec("cpu", PoolKind.ONNX_CPU, replicas=1, cost_per_hour=3.6)  # a thousandth of a dollar a second


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[DataPlane]:
    build_simple(tmp_path / "models" / "m" / "1" / "model.onnx")
    metrics, tiers = Metrics(), TierTable()
    registry = ModelRegistry(
        ModelRepository(tmp_path / "models"), metrics, tiers, [CPU],
        state_dir=tmp_path / "state", profiles_dir=tmp_path / "state" / "profiles",
    )  # fmt: skip
    registry.load_all()
    book = BudgetBook.from_config({"budgets": [{"name": "b", "tenant": "acme", "dollars": 100.0}]})
    try:
        yield DataPlane(registry, metrics, tiers, Budgeting(book))
    finally:
        registry.stop()


def _request(rows: int = 1, width: int = 16, **fields: object) -> InferRequest:
    a = np.arange(rows * width, dtype=np.int32).reshape(rows, width)
    int32 = from_name("INT32")
    inputs = [InputTensor("INPUT0", int32, a), InputTensor("INPUT1", int32, np.ones_like(a))]
    return InferRequest(inputs, **fields)  # type: ignore[arg-type]


def test_the_response_carries_what_was_decided(plane: DataPlane) -> None:
    request = _request(2, tier="gold", tenant="acme")
    response = asyncio.run(plane.infer(plane.registry.deployment("m"), request))
    decision = response.decision
    assert decision is not None and request.decision == decision
    assert (decision.model, decision.version, decision.tier, decision.pool) == ("m", 1, "gold", "cpu")
    assert decision.cost is not None and decision.cost > 0
    # The cost metric and the tenant's budget were told the same decision.
    spent = plane.metrics.registry.get_sample_value(
        "tierserve_cost_dollars_total", {"model": "m", "pool": "cpu", "tier": "gold", "tenant": "acme"}
    )
    assert spent == pytest.approx(decision.cost)
    (row,) = plane.budgeting.book.rows(plane.budgeting.clock())
    assert row.used == pytest.approx(decision.cost) and row.requests == 2


def test_a_request_that_fails_still_says_what_was_decided(plane: DataPlane) -> None:
    request = _request(1, width=3, parameters={"tier": "bronze"})  # [1, 3]: the model takes [-1, 16]
    with pytest.raises(InvalidInput):
        asyncio.run(plane.infer(plane.registry.deployment("m"), request))
    assert request.decision == Decision("m", 1, "bronze")  # its tier, and no pool ran it


def test_a_cached_answer_is_decided_without_a_pool(plane: DataPlane) -> None:
    deployment = plane.registry.deployment("m")
    choice = plane.choose_tier("m", _request(tier="silver"))
    assert plane.record_cached(deployment, choice, 1_000) == Decision("m", 1, "silver")


def test_an_early_rejection_says_which_tier_was_refused(plane: DataPlane) -> None:
    # A tier no pool can meet (a microsecond): refused before the body is read, and the caller's
    # audit record is told the version and tier it was refused for.
    tiers = TierTable.from_config({"tiers": [{"name": "now", "target_ms": 0.001, "priority": 0}]})
    strict = DataPlane(plane.registry, plane.metrics, tiers, Budgeting(BudgetBook()))
    decided: list[Decision] = []
    with pytest.raises(Unavailable):
        strict.admit_early(plane.registry.deployment("m"), "now", None, strict.clock(), decided.append)
    assert decided == [Decision("m", 1, "now")]
