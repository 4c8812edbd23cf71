"""The engine's side of rollouts: which version serves each request that names none, and what each
arm (stable, candidate) served since its window began.

Everything here runs on the event loop's thread (routing and observing happen inside
``Engine.infer``; the rollout service installs states and reads windows from a task), so it needs
no lock. With no rollout installed, a request costs one empty-dict check.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace

from tierserve.rollout import ArmWindow, Rollout, RouteChoice, RouteKeys, route

NO_KEYS = RouteKeys()


@dataclass
class _Live:
    rollout: Rollout
    stable: ArmWindow = field(default_factory=ArmWindow)
    candidate: ArmWindow = field(default_factory=ArmWindow)
    mirrored: int = 0  # shadow copies in flight


class RolloutTable:
    # Shadow copies in flight per model; beyond it a copy is skipped (the served request never waits).
    MAX_SHADOW_IN_FLIGHT = 64

    def __init__(self) -> None:
        self._live: dict[str, _Live] = {}
        self._anonymous = itertools.count()

    def __bool__(self) -> bool:
        return bool(self._live)

    def install(self, rollout: Rollout) -> bool:
        """Route ``rollout.model``'s unversioned requests by ``rollout`` from now on. The windows start
        afresh when the rollout, its step or its phase changed; returns whether they did."""
        live = self._live.get(rollout.model)
        if live is not None and live.rollout.epoch == rollout.epoch:
            live.rollout = rollout
            return False
        self._live[rollout.model] = _Live(rollout)
        return True

    def restart_windows(self, model: str) -> None:
        """Both arms' windows start afresh now (e.g. once a step's warm-up is over)."""
        live = self._live.get(model)
        if live is not None:
            live.stable, live.candidate = ArmWindow(), ArmWindow()

    def remove(self, model: str) -> None:
        self._live.pop(model, None)

    def get(self, model: str) -> Rollout | None:
        live = self._live.get(model)
        return None if live is None else live.rollout

    def rollouts(self) -> list[Rollout]:
        return [live.rollout for live in self._live.values()]

    def windows(self, model: str) -> tuple[ArmWindow, ArmWindow] | None:
        live = self._live.get(model)
        return None if live is None else (live.stable, live.candidate)

    def route(self, model: str, keys: RouteKeys | None, request_id: str | None = None) -> RouteChoice | None:
        """The version for one unversioned request (None: no rollout). ``request_id`` (the V2 body's
        ``id``) keys requests whose ``keys`` carry none."""
        live = self._live.get(model)
        if live is None:
            return None
        keys = keys or NO_KEYS
        if keys.request_id is None and request_id:
            keys = replace(keys, request_id=request_id)
        choice = route(live.rollout, keys, fallback=str(next(self._anonymous)))
        if choice.shadow is not None and live.mirrored >= self.MAX_SHADOW_IN_FLIGHT:
            return RouteChoice(choice.version)
        return choice

    def mirroring(self, model: str, delta: int) -> None:
        live = self._live.get(model)
        if live is not None:
            live.mirrored += delta

    def observe(self, model: str, version: int, tier: str, outcome: str, latency_s: float) -> None:
        live = self._live.get(model)
        if live is None or not live.rollout.active:
            return
        if version == live.rollout.candidate:
            live.candidate.observe(tier, latency_s, outcome)
        elif version == live.rollout.stable:
            live.stable.observe(tier, latency_s, outcome)
