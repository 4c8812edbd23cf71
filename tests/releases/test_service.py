"""The rollout service on a real engine and SQLite store, its clock faked: decisions are stored
before they take effect, audited with their reasons, and two services sharing a store agree."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from support.engines import simple_engine
from tierserve.engine.engine import Engine
from tierserve.errors import Conflict, InvalidInput
from tierserve.releases.service import RolloutService
from tierserve.releases.store import RolloutConflict, open_rollout_store

FAST = {"min_samples": 20, "min_step_s": 10, "check_interval_s": 1, "warmup_s": 0}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


Running = tuple[RolloutService, list[tuple[str, ...]], Clock]


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    with simple_engine(tmp_path, (1, 2), "version_policy: all\ninstances: 1\n") as built:
        yield built


@pytest.fixture
async def service(
    engine: Engine, tmp_path: Path
) -> AsyncIterator[tuple[RolloutService, list[tuple[str, ...]], Clock]]:
    audit: list[tuple[str, ...]] = []

    async def write(action: str, actor: str, model: str, detail: str) -> None:
        audit.append((action, actor, model, detail))

    clock = Clock()
    store = open_rollout_store("", tmp_path / "state")
    running = RolloutService(store, engine, CollectorRegistry(), audit=write, clock=clock)
    await running.open()
    try:
        yield running, audit, clock
    finally:
        await running.stop()


def _serve(engine: Engine, version: int, n: int, outcome: str = "met") -> None:
    for _ in range(n):
        engine.rollouts.observe("m", version, "gold", outcome, 0.002)


@pytest.mark.anyio
async def test_a_step_is_stored_audited_and_in_force(service: Running, engine: Engine) -> None:
    rollouts, audit, clock = service
    created = await rollouts.create({"model": "m", "candidate": 2, "steps": [10, 100], **FAST}, actor="key-1")
    assert (created["stable"], created["weight"], created["revision"]) == (1, 10.0, 1)  # stable: serving now
    assert audit[-1][:3] == ("rollout.start", "key-1", "m")
    with pytest.raises(Conflict):
        await rollouts.create({"model": "m", "candidate": 2}, actor="key-1")
    with pytest.raises(InvalidInput):
        await rollouts.create({"model": "m", "candidate": 5}, actor="key-1")  # not loaded
    await rollouts.tick()  # the windows start now
    _serve(engine, 1, 200)
    _serve(engine, 2, 30)
    clock.now += 11.0
    await rollouts.tick()
    doc = await rollouts.get("m")
    assert doc["phase"] == "promoted" and doc["revision"] == 2
    assert audit[-1][0] == "rollout.promote" and audit[-1][1] == "judge" and "no regression" in audit[-1][3]
    assert engine.rollouts.route("m", None) is not None and engine.rollouts.route("m", None).version == 2  # type: ignore[union-attr]


@pytest.mark.anyio
async def test_a_failing_candidate_is_rolled_back_before_its_minimum_samples(
    service: Running, engine: Engine
) -> None:
    rollouts, audit, clock = service
    await rollouts.create({"model": "m", "candidate": 2, **FAST}, actor="ops")
    await rollouts.tick()
    _serve(engine, 1, 400)
    _serve(engine, 2, 10, outcome="failed")  # fewer than min_samples: the sequential test needs none
    clock.now += 1.0
    await rollouts.tick()
    doc = await rollouts.get("m")
    assert doc["phase"] == "rolled_back" and "error rate" in doc["decisions"][-1]["reasons"][0]
    assert audit[-1][0] == "rollout.rollback"


@pytest.mark.anyio
async def test_two_services_on_one_store_agree_and_one_decision_stands(
    service: Running, engine: Engine, tmp_path: Path
) -> None:
    first, _, _ = service
    second = RolloutService(open_rollout_store("", tmp_path / "state"), engine, CollectorRegistry())
    await second.open()
    try:
        await first.create({"model": "m", "candidate": 2, **FAST}, actor="ops")
        await second.refresh()
        assert (await second.get("m"))["revision"] == 1
        stale = second._stored["m"]
        await first.rollback("m", actor="ops")
        # the second acts on what it saw before: its write loses, and it now sees the first's decision
        with pytest.raises(RolloutConflict):
            await second._commit(stale, stale.rollout, 2_000.0)
        assert (await second.get("m"))["phase"] == "rolled_back"
    finally:
        await second.stop()
