"""Rollouts of one server: the store, the engine's routing table, and the loop that judges them.

Every ``tick_s`` the service reloads the current rollouts from the store (so servers sharing a
database route alike and see each other's decisions within a tick), starts the rollouts that a
model's ``config.yaml`` declares, and, for each stepping rollout whose ``check_interval_s`` is up,
runs the controller on the windows the engine collected. A decision (next step, promote, roll back)
is stored with a compare-and-set before it takes effect here; every decision, with its reasons, is
counted in metrics and written to the audit log. Example::

    service = RolloutService(open_rollout_store("", Path(".state")), engine, registry, audit=write)
    await service.open()
    service.start(loading)      # after the models are loaded
    await service.create({"model": "simple", "candidate": 2, "steps": [5, 25, 50, 100]}, actor="ops")
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from tierserve.engine.engine import Engine
from tierserve.errors import InvalidInput, ModelNotFound, NotFound, TierserveError
from tierserve.releases.store import RolloutConflict, RolloutStore, Stored
from tierserve.rollout import Action, Phase, Rollout, RolloutPlan, Verdict, evaluate, promote, rollback, start

log = logging.getLogger(__name__)

# (action, actor, model, detail): stores an audit record of a decision
Auditor = Callable[[str, str, str, str], Awaitable[None]]


class RolloutService:
    def __init__(
        self,
        store: RolloutStore,
        engine: Engine,
        registry: CollectorRegistry,
        *,
        audit: Auditor | None = None,
        tick_s: float = 1.0,
        clock: Callable[[], float] = time.time,  # wall clock: a rollout outlives this process
    ) -> None:
        self.store = store
        self.engine = engine
        self.audit = audit
        self.tick_s = tick_s
        self._clock = clock
        self._stored: dict[str, Stored] = {}
        self._verdicts: dict[str, Verdict] = {}
        self._judged: dict[str, Verdict] = {}  # the last verdict that ran the tests, with its checks
        self._last_check: dict[str, float] = {}
        self._cost_base: dict[str, tuple[float, float]] = {}
        self._warm_at: dict[str, float] = {}  # monotonic time when a step's warm-up ends
        self._declared: set[tuple[str, int]] = set()
        self._info: dict[str, tuple[str, ...]] = {}
        self._task: asyncio.Task[None] | None = None
        self.weight = Gauge(
            "tierserve_rollout_weight", "The candidate's share of unversioned traffic, percent.", ["model"],
            registry=registry,
        )  # fmt: skip
        self.info = Gauge(
            "tierserve_rollout_info", "The current rollout of each model (value 1).",
            ["model", "stable", "candidate", "mode", "phase"], registry=registry,
        )  # fmt: skip
        self.decisions = Counter(
            "tierserve_rollout_decisions", "Rollout decisions (start, step, promote, rollback), by actor.",
            ["model", "action", "actor"], registry=registry,
        )  # fmt: skip
        self.verdicts = Counter(
            "tierserve_rollout_verdicts", "The judge's verdicts at each check.", ["model", "action"],
            registry=registry,
        )  # fmt: skip
        self.failed_checks = Counter(
            "tierserve_rollout_failed_checks", "Checks that failed (why a rollout was rolled back).",
            ["model", "check"], registry=registry,
        )  # fmt: skip
        self.window_requests = Gauge(
            "tierserve_rollout_window_requests", "Requests each arm served in the current step.",
            ["model", "arm"], registry=registry,
        )  # fmt: skip

    # -- lifecycle ---------------------------------------------------------------------------------

    async def open(self) -> None:
        await self.store.open()
        await self.refresh()

    def start(self, loading: asyncio.Future[Any] | None = None) -> None:
        self._task = asyncio.create_task(self._run(loading), name="rollouts")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.store.close()

    async def _run(self, loading: asyncio.Future[Any] | None) -> None:
        if loading is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(loading)  # config-declared rollouts need their versions loaded
        while True:
            try:
                await self.tick()
            except Exception:
                log.exception("rollout check failed; retrying in %.0f s", self.tick_s)
            await asyncio.sleep(self.tick_s)

    async def tick(self) -> None:
        await self.refresh()
        await self._declare()
        now = self._clock()
        for model, stored in list(self._stored.items()):
            rollout = stored.rollout
            if rollout.active and now - self._last_check.get(model, 0.0) >= rollout.plan.check_interval_s:
                self._last_check[model] = now
                await self._check(stored, now)

    # -- what operators do -------------------------------------------------------------------------

    async def create(self, doc: Mapping[str, Any], actor: str) -> dict[str, Any]:
        model = doc.get("model")
        if not isinstance(model, str) or not model:
            raise InvalidInput("a rollout needs 'model' (the model's name)")
        plan = RolloutPlan.parse({k: v for k, v in doc.items() if k != "model"})
        return self.describe_one(await self._create(model, plan, actor))

    async def promote(self, model: str, actor: str, reason: str | None = None) -> dict[str, Any]:
        stored = await self._current(model)
        now = self._clock()
        changed = promote(stored.rollout, now, actor, (reason or "promoted by an operator",))
        return self.describe_one(await self._commit(stored, changed, now))

    async def rollback(self, model: str, actor: str, reason: str | None = None) -> dict[str, Any]:
        stored = await self._current(model)
        now = self._clock()
        changed = rollback(stored.rollout, now, actor, (reason or "rolled back by an operator",))
        return self.describe_one(await self._commit(stored, changed, now))

    async def delete(self, model: str, actor: str) -> dict[str, Any]:
        """A stepping rollout is rolled back (its record stays, routing everything to stable); a
        finished one is archived, and the model's version policy routes its traffic again."""
        stored = await self._current(model)
        if stored.rollout.active:
            return await self.rollback(model, actor, "deleted by an operator")
        if not await self.store.archive(stored, self._clock()):
            raise RolloutConflict(f"the rollout of '{model}' changed meanwhile; try again")
        self._forget(model)
        await self._audit("rollout.archive", actor, model, f"rollout {stored.rollout.id} archived")
        return {**stored.rollout.describe(), "archived": True}

    async def all(self) -> list[dict[str, Any]]:
        await self.refresh()
        return [self.describe_one(stored) for stored in self._stored.values()]

    async def get(self, model: str) -> dict[str, Any]:
        return self.describe_one(await self._current(model))

    def describe_one(self, stored: Stored) -> dict[str, Any]:
        model = stored.rollout.model
        doc = {**stored.rollout.describe(), "revision": stored.revision}
        verdict = self._verdicts.get(model)
        doc["verdict"] = None if verdict is None else verdict.describe()  # this server's last check
        judged = self._judged.get(model)
        doc["last_judged"] = None if judged is None else judged.describe()  # ... that ran the tests
        windows = self.engine.rollouts.windows(model)
        if windows is not None and stored.rollout.active:
            doc["windows"] = {"stable": windows[0].describe(), "candidate": windows[1].describe()}
        return doc

    # -- internals ---------------------------------------------------------------------------------

    async def refresh(self) -> None:
        current = {stored.rollout.model: stored for stored in await self.store.current()}
        for model, stored in current.items():
            known = self._stored.get(model)
            if known is None or known.revision != stored.revision or known.rollout.id != stored.rollout.id:
                self._adopt(stored)
        for model in [m for m in self._stored if m not in current]:
            self._forget(model)

    async def _current(self, model: str) -> Stored:
        stored = await self.store.find(model)
        if stored is None:
            raise (
                ModelNotFound(model)
                if model not in self.engine.repository.model_names()
                else NotFound(f"no rollout of '{model}'")
            )
        self._adopt(stored)
        return stored

    async def _create(self, model: str, plan: RolloutPlan, actor: str) -> Stored:
        if model not in self.engine.repository.model_names():
            raise ModelNotFound(model)
        loaded = self.engine.versions(model)
        stable = (
            plan.stable if plan.stable is not None else self._serving_version(model, plan.candidate, loaded)
        )
        for version in (stable, plan.candidate):
            if version not in loaded:
                raise InvalidInput(
                    f"version {version} of '{model}' is not loaded (loaded: {loaded}); the model's "
                    "version_policy must serve both the stable and the candidate version"
                )
        now = self._clock()
        plan = replace(plan, stable=stable)
        rollout = start(model, plan, stable=stable, now=now, rollout_id=uuid.uuid4().hex, actor=actor)
        stored = await self.store.create(rollout, now)
        self._adopt(stored)
        await self._decided(None, rollout)
        return stored

    def _serving_version(self, model: str, candidate: int, loaded: list[int]) -> int:
        """What serves the model's unversioned requests now (the stable of a new rollout)."""
        current = self._stored.get(model)
        if current is not None and current.rollout.phase is Phase.PROMOTED:
            return current.rollout.candidate
        if current is not None and current.rollout.phase is Phase.ROLLED_BACK:
            return current.rollout.stable
        others = [v for v in loaded if v != candidate]
        if not others:
            raise InvalidInput(f"'{model}' has no loaded version besides {candidate} to compare it with")
        return max(loaded) if max(loaded) != candidate else max(others)

    async def _check(self, stored: Stored, now: float) -> None:
        rollout = stored.rollout
        model = rollout.model
        windows = self.engine.rollouts.windows(model)
        loaded = self.engine.versions(model)
        missing = [v for v in (rollout.stable, rollout.candidate) if v not in loaded]
        if windows is None or missing:
            self._verdicts[model] = Verdict(
                Action.HOLD, (f"version(s) {missing} of '{model}' are not loaded",)
            )
            return
        warm_at = self._warm_at.get(model)
        if warm_at is not None:
            if time.monotonic() < warm_at:
                self._verdicts[model] = Verdict(
                    Action.HOLD, ("warming up: the step's first requests are not judged",)
                )
                return
            del self._warm_at[model]
            self._restart_windows(rollout)
            windows = self.engine.rollouts.windows(model)
            assert windows is not None
        stable, candidate = windows
        base = self._cost_base.get(model, (0.0, 0.0))
        stable.cost = self._cost(model, rollout.stable) - base[0]
        candidate.cost = self._cost(model, rollout.candidate) - base[1]
        self.window_requests.labels(model, "stable").set(stable.requests)
        self.window_requests.labels(model, "candidate").set(candidate.requests)
        changed, verdict = evaluate(rollout, stable, candidate, now)
        self._verdicts[model] = verdict
        if verdict.checks:
            self._judged[model] = verdict
        self.verdicts.labels(model, str(verdict.action)).inc()
        for check in verdict.checks:
            if check.status == "fail":
                self.failed_checks.labels(model, check.name).inc()
        if changed != rollout:
            with contextlib.suppress(RolloutConflict):  # another server decided first: its decision stands
                await self._commit(stored, changed, now)

    async def _commit(self, stored: Stored, changed: Rollout, now: float) -> Stored:
        updated = await self.store.update(stored, changed, now)
        if updated is None:
            await self.refresh()
            raise RolloutConflict(
                f"the rollout of '{changed.model}' changed meanwhile (another server); try again"
            )
        self._adopt(updated)
        await self._decided(stored.rollout, changed)
        return updated

    def _adopt(self, stored: Stored) -> None:
        rollout = stored.rollout
        known = self._stored.get(rollout.model)
        if known is not None and known.rollout.id != rollout.id:  # another rollout: its own verdicts
            self._verdicts.pop(rollout.model, None)
            self._judged.pop(rollout.model, None)
        self._stored[rollout.model] = stored
        if self.engine.rollouts.install(rollout):
            self._restart_windows(rollout)
            self._warm_at[rollout.model] = time.monotonic() + rollout.plan.warmup_s
        self.weight.labels(rollout.model).set(rollout.weight)
        labels = (
            rollout.model,
            str(rollout.stable),
            str(rollout.candidate),
            str(rollout.plan.mode),
            str(rollout.phase),
        )
        previous = self._info.get(rollout.model)
        if previous != labels:
            if previous is not None:
                with contextlib.suppress(KeyError):
                    self.info.remove(*previous)
            self.info.labels(*labels).set(1)
            self._info[rollout.model] = labels

    def _restart_windows(self, rollout: Rollout) -> None:
        self.engine.rollouts.restart_windows(rollout.model)
        self._cost_base[rollout.model] = (
            self._cost(rollout.model, rollout.stable),
            self._cost(rollout.model, rollout.candidate),
        )

    def _forget(self, model: str) -> None:
        self._stored.pop(model, None)
        self._verdicts.pop(model, None)
        self._judged.pop(model, None)
        self._warm_at.pop(model, None)
        self.engine.rollouts.remove(model)
        with contextlib.suppress(KeyError):
            self.weight.remove(model)
        previous = self._info.pop(model, None)
        if previous is not None:
            with contextlib.suppress(KeyError):
                self.info.remove(*previous)

    async def _decided(self, before: Rollout | None, after: Rollout) -> None:
        if not after.decisions or (before is not None and before.decisions[-1:] == after.decisions[-1:]):
            return  # a look without a decision
        decision = after.decisions[-1]
        self.decisions.labels(
            after.model, decision.action, "judge" if decision.actor == "judge" else "operator"
        ).inc()
        detail = (
            f"rollout {after.id}: {decision.action} to {decision.weight:g}% of version {after.candidate}: "
            + "; ".join(decision.reasons)
        )
        log.info("%s (%s)", detail, decision.actor)
        await self._audit(f"rollout.{decision.action}", decision.actor, after.model, detail)

    async def _audit(self, action: str, actor: str, model: str, detail: str) -> None:
        if self.audit is None:
            return
        try:
            await self.audit(action, actor, model, detail)
        except Exception:  # the decision is stored and in force; a lost audit record is logged
            log.exception("could not audit %s of %s", action, model)

    async def _declare(self) -> None:
        """Start the rollouts that models' config.yaml declare, once per (model, candidate) ever."""
        for model in self.engine.repository.model_names():
            try:
                plan = self.engine.config(model).rollout
            except ModelNotFound:
                continue
            if plan is None or (model, plan.candidate) in self._declared:
                continue
            self._declared.add((model, plan.candidate))
            if await self.store.declared(model, plan.candidate):
                continue
            try:
                await self._create(model, plan, "config")
            except TierserveError as exc:
                log.warning(
                    "the rollout that %s's config.yaml declares did not start: %s", model, exc.message
                )

    def _cost(self, model: str, version: int) -> float:
        try:
            (stats,) = self.engine.stats(model, str(version))
        except (ModelNotFound, ValueError):
            return 0.0
        pools: Mapping[str, Mapping[str, float]] = stats.get("pool_stats", {})  # type: ignore[assignment]
        return sum(float(p.get("cost", 0.0)) for p in pools.values())
