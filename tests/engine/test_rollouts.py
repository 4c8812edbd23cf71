"""The engine's rollout table: routing, windows per arm and epoch, the shadow cap."""

from __future__ import annotations

from tierserve.engine.rollouts import RolloutTable
from tierserve.rollout import RolloutPlan, RouteKeys, rollback, start


def _canary(weight: float = 50.0, mode: str = "canary") -> RolloutPlan:
    steps = [weight, 100] if weight < 100 else [100]
    return RolloutPlan.parse({"candidate": 2, "mode": mode, "steps": steps, "weight": weight})


def test_no_rollout_routes_nothing_and_costs_an_empty_check() -> None:
    table = RolloutTable()
    assert not table
    assert table.route("m", None) is None
    table.observe("m", 1, "gold", "met", 0.001)  # ignored


def test_observations_go_to_their_arm_and_windows_restart_with_the_epoch() -> None:
    table = RolloutTable()
    rollout = start("m", _canary(), stable=1, now=0.0, rollout_id="r")
    assert table.install(rollout)
    assert not table.install(rollout)  # same epoch: the windows go on
    table.observe("m", 2, "gold", "met", 0.002)
    table.observe("m", 1, "gold", "failed", 0.001)
    table.observe("m", 7, "gold", "met", 0.001)  # neither arm (a pinned request to another version)
    windows = table.windows("m")
    assert windows is not None
    stable, candidate = windows
    assert (stable.requests, stable.errors, candidate.requests) == (1, 1, 1)
    assert table.install(rollback(rollout, 1.0, "ops"))  # a new phase: fresh windows
    stable, candidate = table.windows("m") or (None, None)
    assert stable is not None and candidate is not None and stable.requests == candidate.requests == 0
    assert table.route("m", RouteKeys(tenant="t")) is not None
    assert {table.route("m", RouteKeys(request_id=str(i))).version for i in range(50)} == {1}  # type: ignore[union-attr]


def test_the_request_body_id_keys_requests_without_keys_and_shadow_copies_are_capped() -> None:
    table = RolloutTable()
    table.install(start("m", _canary(50.0), stable=1, now=0.0, rollout_id="r"))
    versions = {table.route("m", None, request_id="same").version for _ in range(20)}  # type: ignore[union-attr]
    assert len(versions) == 1  # sticky by the V2 body's id
    table.install(start("s", _canary(100.0, mode="shadow"), stable=1, now=0.0, rollout_id="s"))
    choice = table.route("s", None)
    assert choice is not None and choice.version == 1 and choice.shadow == 2
    table.mirroring("s", RolloutTable.MAX_SHADOW_IN_FLIGHT)
    capped = table.route("s", None)
    assert capped is not None and capped.shadow is None  # the served request never waits for a copy
