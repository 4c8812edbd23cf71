"""The data plane: one request from the engine's door to its answer.

Per request: the version it runs on (pinned, or the rollout's choice), its tier (``TierTable.
for_request``); validation against the version's signature; admission (``scheduler.admission``)
asks every pool that serves the version for its prediction (``ModelRunner.option``) and the router
picks the cheapest pool predicted to meet the deadline, or rejects early; the request waits in that
pool's queue; if the batch fails there, it is retried on the next pool while the deadline allows.
A request is always answered: with its outputs or with an error.

What was decided (version, tier, pool, cost) is returned with the response (``InferResponse.
decision``) and written on the request as it is decided (``InferRequest.decision``), so that a request
that fails still says what was decided for it. Metrics, budgets, statistics and the rollout judge are
told from the same decision; the API copies it into the audit record.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from tierserve.budgets.policy import Verdict
from tierserve.engine.budgeting import Budgeting
from tierserve.engine.deployment import Deployment
from tierserve.engine.hooks import ResultCache
from tierserve.engine.registry import ModelRegistry
from tierserve.engine.request import Decision, InferRequest, InferResponse, OutputTensor
from tierserve.engine.rollouts import RolloutTable
from tierserve.engine.runner import ModelRunner, Outputs
from tierserve.engine.validate import Prepared, prepare
from tierserve.errors import DeadlineExceeded, InferenceFailed, InvalidInput, TierserveError, Unavailable
from tierserve.observability.metrics import Metrics
from tierserve.scheduler import admission
from tierserve.scheduler.admission import Ticket
from tierserve.scheduler.tiers import TierChoice, TierTable

log = logging.getLogger(__name__)

_NO_BUDGETS = Verdict("ok")


@dataclass(frozen=True)
class Served:
    """One attempt that a pool finished: its outputs, the pool, and what it cost (dollars)."""

    outputs: Outputs
    runner: ModelRunner
    cost: float


class DataPlane:
    def __init__(
        self,
        registry: ModelRegistry,
        metrics: Metrics,
        tiers: TierTable,
        budgeting: Budgeting,
        *,
        honour_tiers: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = registry
        self.metrics = metrics
        self.tiers = tiers
        self.budgeting = budgeting
        self.honour_tiers = honour_tiers
        self.clock = clock  # monotonic seconds: what arrivals and deadlines are measured on
        self.result_cache: ResultCache | None = None  # installed by the application (tierserve.cache)
        self.rollouts = RolloutTable()  # versions for unversioned requests while a rollout runs
        self._shadows: set[asyncio.Task[None]] = set()

    def choose_tier(self, model: str, request: InferRequest) -> TierChoice:
        config = self.registry.config(model)
        return self.tiers.for_request(
            request.parameters,
            header=request.tier,
            key_tier=request.key_tier,
            default_priority=config.default_priority_level,
            default_timeout_us=config.default_timeout_us,
            model_default=config.default_tier,
        )

    async def infer(
        self, deployment: Deployment, request: InferRequest, *, cached: bool = True, pinned: bool = True
    ) -> InferResponse:
        """Validate ``request``, route it to a pool by tier and cost, await its outputs (retrying on
        another pool if a batch fails there while the deadline allows). A request that names no
        version (``pinned`` False) goes where the model's rollout sends it; the deployment it runs on
        is not unloaded before it is answered. With a result cache installed, it answers first (and
        calls back here with ``cached=False`` on a miss). The deadline counts from
        ``request.arrival`` (on ``clock``; now when unset). The response carries what was decided
        (``decision``: version, tier, pool, cost); ``request.decision`` holds it too, also on failure."""
        if request.arrival is None:
            request.arrival = self.clock()
        deployment, shadow = self._enter(deployment, request, pinned)
        try:
            if shadow is not None:
                self._mirror(shadow, request)
            if cached and self.result_cache is not None:
                return await self.result_cache.infer(deployment, request)
            return await self._infer(deployment, request)
        finally:
            deployment.leave()

    def _enter(
        self, deployment: Deployment, request: InferRequest, pinned: bool
    ) -> tuple[Deployment, Deployment | None]:
        """The deployment that serves ``request`` (and one that gets a shadow copy), counted in."""
        shadow = None
        if self.rollouts and not pinned:
            choice = self.rollouts.route(deployment.name, request.routing, request.id)
            model = self.registry.loaded(deployment.name)
            if choice is not None and model is not None:
                deployment = model.deployments.get(choice.version, deployment)
                if choice.shadow is not None:
                    shadow = model.deployments.get(choice.shadow)
        while not deployment.enter():
            # It drained and closed while this request was on its way (a swap): the version's new
            # deployment, or the model's current default for a request that named no version.
            deployment = self.registry.deployment(
                deployment.name, str(deployment.version) if pinned else None
            )
        return deployment, shadow

    def _mirror(self, shadow: Deployment, request: InferRequest) -> None:
        """Run a copy of ``request`` on ``shadow`` and discard its answer (its outcome is observed)."""

        async def run() -> None:
            try:
                if shadow.enter():
                    try:
                        await self._infer(shadow, replace(request, id=None, decision=None))
                    finally:
                        shadow.leave()
            except TierserveError:
                pass  # recorded for the judge by _record; the client never sees it
            finally:
                self.rollouts.mirroring(shadow.name, -1)

        self.rollouts.mirroring(shadow.name, +1)
        task = asyncio.get_running_loop().create_task(run(), name=f"shadow-{shadow.name}")
        self._shadows.add(task)
        task.add_done_callback(self._shadows.discard)

    async def _infer(self, deployment: Deployment, request: InferRequest) -> InferResponse:
        assert request.arrival is not None
        arrival = request.arrival
        choice = self.choose_tier(deployment.name, request)
        request.decision = Decision(deployment.name, deployment.version, choice.tier.name)
        outcome = "failed"
        try:
            verdict = self.budgeting.verdict(request.tenant) if self.budgeting.active else _NO_BUDGETS
            prepared = prepare(deployment.signature, deployment.max_batch_size, request, deployment.name)
            # A tenant over a "cheapest" budget is served best effort on the cheapest pool.
            best_effort = verdict.action != "ok"
            t = admission.ticket(
                choice, arrival, prepared.rows, honour_tiers=self.honour_tiers, best_effort=best_effort
            )
            served = await self._route(deployment, prepared, t, verdict)
            decision = Decision(
                deployment.name, deployment.version, choice.tier.name, served.runner.pool.name, served.cost
            )
            request.decision = decision
            self._account(deployment, served.runner, t, request.tenant, decision)
            response = InferResponse(
                model_name=deployment.name,
                model_version=str(deployment.version),
                id=request.id,
                outputs=[
                    OutputTensor(spec.name, spec.datatype, np.asarray(served.outputs[spec.name]), binary)
                    for spec, binary in prepared.outputs
                ],
                decision=decision,
            )
            outcome = "met" if self.clock() <= t.deadline else "missed"
            return response
        except Unavailable:
            outcome = "rejected"
            raise
        except InvalidInput:
            outcome = "invalid"
            raise
        except DeadlineExceeded:
            outcome = "timed_out"
            raise
        finally:
            self._record(deployment, choice, outcome, int((self.clock() - arrival) * 1e9))

    def admit_early(
        self,
        deployment: Deployment,
        header: str | None,
        key_tier: str | None,
        arrival: float,
        decided: Callable[[Decision], None] | None = None,
    ) -> None:
        """Cheap rejection, before the body is decoded: raise Unavailable when a request whose body
        names no tier, with this ``X-Tier`` header and key, arriving at ``arrival`` could not be
        admitted even with one row (``decided`` is told the version and tier it was refused for).
        Service time grows with rows, so a request that fails here fails after decoding too."""
        config = self.registry.config(deployment.name)
        if not self.honour_tiers or self.budgeting.active or config.cache is not None:
            return  # a tenant's budget may demote it to best effort, a cached answer may serve it
        choice = self.tiers.for_request(
            {},
            header=header,
            key_tier=key_tier,
            default_priority=config.default_priority_level,
            default_timeout_us=config.default_timeout_us,
            model_default=config.default_tier,
        )
        if not choice.tier.rejects_late:
            return
        t = admission.ticket(choice, arrival, 1)
        try:
            self.pick(deployment, t, set())
        except Unavailable:
            self._record(deployment, choice, "rejected", int((self.clock() - arrival) * 1e9))
            if decided is not None:
                decided(Decision(deployment.name, deployment.version, choice.tier.name))
            raise

    async def _route(
        self, deployment: Deployment, prepared: Prepared, t: Ticket, verdict: Verdict = _NO_BUDGETS
    ) -> Served:
        failed: set[str] = set()
        error: TierserveError | None = None
        while True:
            try:
                runner = self.pick(deployment, t, failed, verdict)
            except Unavailable:
                if error is not None and not t.reject_late:
                    raise error from None  # best effort: the failure itself says more than "no pool left"
                raise
            try:
                outputs = await self._await(runner.submit(prepared.feeds, prepared.batch_key, t), t)
            except (InferenceFailed, Unavailable) as exc:
                if exc.blames_backend:
                    runner.breaker.record_failure(self.clock())
                failed.add(runner.pool.name)
                if len(failed) == len(deployment.runners):
                    raise
                error = exc
                log.info("retrying %s after %s failed: %s", deployment.name, runner.pool.name, exc.message)
                continue
            now = self.clock()
            runner.breaker.record_success(now)
            runner.observe_latency(t.tier.name, now - t.arrival)
            return Served(outputs, runner, runner.cost_per_item(t.rows) * t.rows)

    def _account(
        self, deployment: Deployment, runner: ModelRunner, t: Ticket, tenant: str, decision: Decision
    ) -> None:
        """Statistics, the cost metric and the budgets, told what the engine decided."""
        pool, cost = decision.pool, decision.cost or 0.0
        assert pool is not None
        deployment.stats.record_pool(pool, t.rows, cost)
        self.metrics.record_route(decision.model, pool, decision.tier, tenant, cost)
        if self.budgeting.active:
            busy = runner.estimator.mean(t.rows) if runner.estimator.known else 0.0
            self.budgeting.record(tenant, pool, cost, t.rows, busy)

    async def _await(self, future: asyncio.Future[Outputs], t: Ticket) -> Outputs:
        """The outputs; for a best-effort request with its own ``timeout``, DeadlineExceeded (504) once
        that passes, the queued work withdrawn (a batch already running cannot be stopped mid-way)."""
        if not t.client_timeout or t.reject_late:
            return await future
        try:
            return await asyncio.wait_for(future, max(0.0, t.deadline - self.clock()))
        except TimeoutError:
            raise DeadlineExceeded(
                f"tier '{t.tier.name}' request to this model passed its {t.budget_s * 1000:.0f} ms timeout"
            ) from None

    def pick(
        self, deployment: Deployment, t: Ticket, failed: set[str], verdict: Verdict = _NO_BUDGETS
    ) -> ModelRunner:
        """The pool for this attempt (admission's choice), or Unavailable when none will do."""
        now = self.clock()
        budgets = self.budgeting.active
        if len(deployment.runners) == 1 and not t.reject_late and not failed and not budgets:
            (runner,) = deployment.runners.values()  # one pool and no deadline to check: nothing to choose
            if runner.breaker.allows(now):
                return runner
        options = [r.option(t, now) for r in deployment.runners.values()]
        if budgets:
            options = self.budgeting.options(options, verdict)
        route = admission.route(options, t, now, failed)
        if route.pool is None:
            finite = route.predicted_finish < 1e9
            raise Unavailable(
                f"tier '{t.tier.name}' cannot be served within its {t.budget_s * 1000:.0f} ms "
                f"deadline on model '{deployment.name}': {route.reason}",
                retry_after_s=max(1.0, route.predicted_finish - now) if finite else 1.0,
            )
        runner = deployment.runners[route.pool]
        runner.breaker.acquire(now)
        return runner

    def record_cached(self, deployment: Deployment, choice: TierChoice, elapsed_ns: int) -> Decision:
        """A request answered without running the model (a result-cache hit), counted as served;
        what was decided for it (no pool ran it, so no pool and no cost)."""
        outcome = "met" if elapsed_ns <= choice.budget_s * 1e9 else "missed"
        self._record(deployment, choice, outcome, elapsed_ns)
        return Decision(deployment.name, deployment.version, choice.tier.name)

    def _record(self, deployment: Deployment, choice: TierChoice, outcome: str, elapsed_ns: int) -> None:
        ok = outcome in ("met", "missed")
        deployment.stats.record_request(ok, elapsed_ns)
        deployment.stats.record_tier(choice.tier.name, outcome, elapsed_ns)
        if self.rollouts:
            self.rollouts.observe(
                deployment.name, deployment.version, choice.tier.name, outcome, elapsed_ns / 1e9
            )
        tier_metrics = self.metrics.for_tier(deployment.name, deployment.version, choice.tier.name)
        tier_metrics.outcome(outcome).inc()
        model_metrics = deployment.primary.metrics
        if ok:
            model_metrics.success.inc()
            model_metrics.request_seconds.observe(elapsed_ns / 1e9)
            tier_metrics.latency.observe(elapsed_ns / 1e9)
        elif outcome == "rejected":
            model_metrics.rejected.inc()
        else:
            model_metrics.failure.inc()
