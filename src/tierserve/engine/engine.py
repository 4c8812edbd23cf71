"""The engine: the one object the application, the CLI commands and the services hold.

A thin facade over three parts, each in its own module:

- ``registry.ModelRegistry``: what is loaded, in which versions, on which pools; load, reload,
  unload, readiness. Backends are built per pool kind by ``kinds.BACKEND_KINDS``.
- ``dataplane.DataPlane``: one request from the door to its answer (tier, validation, admission,
  the pool's queue, retries), and what was decided for it (``InferResponse.decision``).
- ``reports``: the repository index, statistics, service-time estimates and queue snapshots.

Example::

    engine = Engine(ModelRepository(Path("models")), Metrics())
    engine.load_all()
    response = await engine.infer(engine.deployment("simple"), request)
    response.decision   # Decision(model='simple', version=1, tier='silver', pool='cpu', cost=...)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from pathlib import Path

from tierserve.budgets.policy import BudgetBook
from tierserve.engine import reports
from tierserve.engine.budgeting import Budgeting
from tierserve.engine.dataplane import DataPlane
from tierserve.engine.deployment import Deployment
from tierserve.engine.hooks import ResultCache
from tierserve.engine.pools import PoolSpec, default_pools
from tierserve.engine.registry import DRAIN_TIMEOUT_S, ModelRegistry, ModelState, available_cores
from tierserve.engine.request import Decision, InferRequest, InferResponse
from tierserve.engine.rollouts import RolloutTable
from tierserve.observability.metrics import Metrics
from tierserve.repository.config import ModelConfig
from tierserve.repository.repository import ModelRepository
from tierserve.scheduler.tiers import TierChoice, TierTable

__all__ = ["DRAIN_TIMEOUT_S", "Engine", "ModelState", "available_cores"]


class Engine:
    def __init__(
        self,
        repository: ModelRepository,
        metrics: Metrics,
        tiers: TierTable | None = None,
        *,
        pools: list[PoolSpec] | None = None,
        honour_tiers: bool = True,
        state_dir: Path = Path(".state"),
        profiles_dir: Path | None = None,
        budgets: BudgetBook | None = None,
    ) -> None:
        self.repository = repository
        self.budgeting = Budgeting(budgets or BudgetBook())
        self.metrics = metrics
        self.tiers = tiers or TierTable()
        self.pools = pools or default_pools()
        self.honour_tiers = honour_tiers
        self.state_dir = state_dir
        self.profiles_dir = profiles_dir if profiles_dir is not None else state_dir / "profiles"
        self.registry = ModelRegistry(
            repository,
            metrics,
            self.tiers,
            self.pools,
            state_dir=state_dir,
            profiles_dir=self.profiles_dir,
            versions_changed=self._versions_changed,
        )
        self.data = DataPlane(
            self.registry,
            metrics,
            self.tiers,
            self.budgeting,
            honour_tiers=honour_tiers,
            clock=time.monotonic,
        )

    # -- hooks the application installs ----------------------------------------------------------

    @property
    def result_cache(self) -> ResultCache | None:
        return self.data.result_cache

    @result_cache.setter
    def result_cache(self, cache: ResultCache | None) -> None:
        self.data.result_cache = cache

    @property
    def rollouts(self) -> RolloutTable:
        return self.data.rollouts

    def _versions_changed(self, name: str, versions: Collection[int]) -> None:
        cache = self.data.result_cache
        if cache is not None:
            cache.versions_changed(name, versions)

    # -- registry ------------------------------------------------------------------------------

    @property
    def started(self) -> bool:
        return self.registry.started

    @property
    def ready(self) -> bool:
        return not self.registry.not_ready_reasons()

    def not_ready_reasons(self, *, strict: bool = True) -> list[str]:
        return self.registry.not_ready_reasons(strict=strict)

    def load_all(self) -> None:
        self.registry.load_all()

    def load(self, name: str, *, at_start: bool = False) -> None:
        self.registry.load(name, at_start=at_start)

    def unload(self, name: str) -> None:
        self.registry.unload(name)

    def stop(self) -> None:
        self.registry.stop()

    def deployment(self, name: str, version: str | None = None) -> Deployment:
        return self.registry.deployment(name, version)

    def config(self, name: str) -> ModelConfig:
        return self.registry.config(name)

    def versions(self, name: str) -> list[int]:
        return self.registry.versions(name)

    def deployments(self) -> list[Deployment]:
        return self.registry.deployments()

    # -- reports -------------------------------------------------------------------------------

    def index(self) -> list[dict[str, str]]:
        return reports.index(self.registry)

    def stats(self, name: str | None = None, version: str | None = None) -> list[dict[str, object]]:
        return reports.statistics(self.registry, name, version)

    def profiles(self) -> list[dict[str, object]]:
        return reports.profiles(self.registry)

    def queue_snapshots(self) -> list[reports.QueueRow]:
        return reports.queue_snapshots(self.registry, self.tiers, self.honour_tiers)

    # -- data plane ----------------------------------------------------------------------------

    def clock(self) -> float:
        """The engine's clock (monotonic seconds): what arrivals and deadlines are measured on."""
        return self.data.clock()

    def choose_tier(self, model: str, request: InferRequest) -> TierChoice:
        return self.data.choose_tier(model, request)

    async def infer(
        self, deployment: Deployment, request: InferRequest, *, cached: bool = True, pinned: bool = True
    ) -> InferResponse:
        """Validate ``request``, route it to a pool by tier and cost, await its outputs (retrying on
        another pool if a batch fails there while the deadline allows). A request that names no
        version (``pinned`` False) goes where the model's rollout sends it; the deployment it runs on
        is not unloaded before it is answered. With a result cache installed, it answers first (and
        calls back here with ``cached=False`` on a miss). The deadline counts from
        ``request.arrival`` (on ``clock()``; now when unset). The response carries what was decided
        (``decision``: version, tier, pool, cost); ``request.decision`` holds it too, also on failure."""
        return await self.data.infer(deployment, request, cached=cached, pinned=pinned)

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
        self.data.admit_early(deployment, header, key_tier, arrival, decided)

    def record_cached(self, deployment: Deployment, choice: TierChoice, elapsed_ns: int) -> Decision:
        """A request answered without running the model (a result-cache hit), counted as served."""
        return self.data.record_cached(deployment, choice, elapsed_ns)
