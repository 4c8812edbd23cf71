"""The engine: loads model versions onto pools, and routes each request to a pool.

Per request: choose its tier; ask every pool that serves the model version for its prediction
(``ModelRunner.option``); let the router (pure policy) pick the cheapest pool predicted to meet the
deadline, or reject early; queue it there; if the batch fails on that pool, retry on the next pool
while the deadline allows. A request is always answered: with its outputs or with an error.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from tierserve.backends.base import Backend
from tierserve.backends.declared import DeclaredView
from tierserve.backends.onnx import OnnxBackend, OnnxOptions
from tierserve.budgets.policy import BudgetBook, Verdict
from tierserve.engine.budgeting import Budgeting
from tierserve.engine.deployment import Deployment, int8_backends, local_plan, onnx_backends
from tierserve.engine.hooks import ResultCache
from tierserve.engine.pools import PoolKind, PoolSpec, default_pools
from tierserve.engine.request import InferRequest, InferResponse, OutputTensor
from tierserve.engine.rollouts import RolloutTable
from tierserve.engine.runner import ModelRunner, Outputs
from tierserve.engine.validate import Prepared, prepare
from tierserve.engine.warmup import warm_up
from tierserve.errors import (
    DeadlineExceeded,
    InferenceFailed,
    InvalidInput,
    ModelNotFound,
    TierserveError,
    Unavailable,
    explain,
)
from tierserve.observability.metrics import Metrics
from tierserve.observability.stats import ModelStats
from tierserve.profiler.profile import load_profile, profile_path
from tierserve.repository.config import DEFAULT_MAX_BATCH_SIZE, ModelConfig
from tierserve.repository.repository import ModelRepository, parse_version
from tierserve.scheduler import admission
from tierserve.scheduler.admission import Ticket
from tierserve.scheduler.service_time import ServiceTimeEstimator
from tierserve.scheduler.tiers import TierChoice, TierTable

log = logging.getLogger(__name__)

_NO_BUDGETS = Verdict("ok")
# How long an unloaded or replaced deployment waits for the requests inside it before it stops.
DRAIN_TIMEOUT_S = 30.0


class ModelState(enum.StrEnum):
    LOADING = "LOADING"
    READY = "READY"
    UNLOADING = "UNLOADING"
    UNAVAILABLE = "UNAVAILABLE"


@dataclass
class _Entry:
    state: ModelState
    reason: str = ""
    # A failure that holds strict readiness down: models the server was started with (and their later
    # failed reloads). A failed explicit load of a model that was not serving is answered to its caller
    # (400) and shown in the index, but does not drain a server that serves every other model.
    blocks_readiness: bool = False

    @property
    def failed(self) -> bool:
        return self.state is ModelState.UNAVAILABLE and self.reason != UNLOADED


UNLOADED = "unloaded"


@dataclass
class _Model:
    config: ModelConfig
    deployments: dict[int, Deployment] = field(default_factory=dict)

    @property
    def default_version(self) -> int:
        return max(self.deployments)


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


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
        self._models: dict[str, _Model] = {}
        self._states: dict[tuple[str, int], _Entry] = {}
        self._stats: dict[tuple[str, int], ModelStats] = {}
        # Load and unload are rare and slow; one at a time keeps the tables consistent.
        self._admin_lock = threading.Lock()
        self._clock = time.monotonic
        self.started = False
        self.result_cache: ResultCache | None = None  # installed by the application (tierserve.cache)
        self.rollouts = RolloutTable()  # versions for unversioned requests while a rollout runs
        self._shadows: set[asyncio.Task[None]] = set()

    # -- lifecycle ---------------------------------------------------------------------------

    def load_all(self) -> None:
        """Load every model of the repository; one that fails is recorded (index, readiness) and
        the others load all the same. Never raises: shutdown awaits this."""
        try:
            names = self.repository.model_names()
        except OSError as exc:
            log.error("cannot list the model repository %s: %s", self.repository.root, exc)
            names = []
        for name, reason in self.repository.unservable().items():
            log.warning("model %s is not served: %s", name, reason)
        for name in names:
            try:
                self.load(name, at_start=True)
            except TierserveError as exc:
                log.error("model %s failed to load: %s", name, exc.message)
            except Exception:  # load() records the reason; this keeps the other models loading
                log.exception("model %s failed to load", name)
        self.started = True

    @property
    def ready(self) -> bool:
        return not self.not_ready_reasons()

    def not_ready_reasons(self, *, strict: bool = True) -> list[str]:
        """Why the server is not ready (empty: ready). Triton's strict readiness: started, and no model
        it was started with failed to load. Failures of models since removed from the repository, or
        loaded or unloaded since, no longer count."""
        if not self.started:
            return ["loading models"]
        if not strict:
            return []
        blocking = [(key, e) for key, e in list(self._states.items()) if e.failed and e.blocks_readiness]
        if not blocking:
            return []
        try:
            present = set(self.repository.model_names())
        except OSError:
            present = {name for (name, _), _ in blocking}
        return [
            f"model '{name}' version {version} failed to load: {entry.reason}"
            for (name, version), entry in sorted(blocking, key=lambda item: item[0])
            if name in present
        ]

    def load(self, name: str, *, at_start: bool = False) -> None:
        """Load (or reload) the versions that the model's version policy selects, on every pool.
        A version that fails to reload keeps serving as it was (as Triton does); the error says so."""
        with self._admin_lock:
            previous = self._models.get(name)
            blocks = at_start or any(e.blocks_readiness for (n, _), e in self._states.items() if n == name)
            try:
                config = self.repository.config(name)
                wanted = self.repository.versions_to_serve(name, config)
            except ModelNotFound:
                raise  # nothing on disk to load: what serves (if anything) stays
            except Exception as exc:
                reason = explain(exc)
                self._fail_model(name, previous, reason, blocks)
                if previous is not None:
                    raise InvalidInput(
                        f"failed to reload '{name}' (still serving as loaded before): {reason}"
                    ) from None
                raise InvalidInput(f"failed to load '{name}': {reason}") from None
            model = _Model(config)
            kept: set[int] = set()
            failures: list[str] = []
            for version in wanted:
                serving = previous.deployments.get(version) if previous is not None else None
                if serving is None:
                    self._states[(name, version)] = _Entry(ModelState.LOADING)
                try:
                    model.deployments[version] = self._deploy(name, version, config)
                    self._states[(name, version)] = _Entry(ModelState.READY)
                except Exception as exc:
                    reason = explain(exc)
                    if not isinstance(exc, TierserveError):
                        log.exception("%s version %d failed to load", name, version)
                    if serving is not None:
                        model.deployments[version] = serving
                        kept.add(version)
                        reason = f"reload failed, serving the version loaded before: {reason}"
                        self._states[(name, version)] = _Entry(ModelState.READY, reason)
                    else:
                        self._states[(name, version)] = _Entry(ModelState.UNAVAILABLE, reason, blocks)
                    failures.append(f"version {version}: {reason}")
            if previous is not None and set(model.deployments) <= kept:
                # Nothing new loaded (e.g. the new latest version is broken): everything that served
                # goes on serving, under the configuration it was loaded with.
                model, kept = previous, set(previous.deployments)
                failures.append(f"still serving versions {sorted(kept)} as loaded before")
            for (n, version), entry in list(self._states.items()):
                if n == name and version not in wanted and entry.failed:
                    del self._states[(n, version)]  # versions no longer asked for fail no more
            if model.deployments:
                self._models[name] = model
            else:
                self._models.pop(name, None)
            if previous is not None:
                self._stop(name, previous, replaced=set(model.deployments), kept=kept)
            if self.result_cache is not None:
                changed = {*wanted, *(previous.deployments if previous else ())}
                self.result_cache.versions_changed(name, changed)
            if failures:
                raise InvalidInput(f"failed to load '{name}': " + "; ".join(failures))
            log.info(
                "loaded %s versions %s on pools %s",
                name,
                sorted(model.deployments),
                [p.name for p in self.pools if p.serves(name)],
            )

    def _fail_model(self, name: str, previous: _Model | None, reason: str, blocks: bool) -> None:
        """Record a model-wide failure (its config) on each of its versions; what serves stays."""
        try:
            versions = self.repository.versions(name)
        except Exception:
            versions = []
        for version in versions:
            if previous is not None and version in previous.deployments:
                self._states[(name, version)] = _Entry(
                    ModelState.READY, f"reload failed, serving as loaded before: {reason}"
                )
            else:
                self._states[(name, version)] = _Entry(ModelState.UNAVAILABLE, reason, blocks)
        if not versions:
            log.error("model %s: %s", name, reason)

    def unload(self, name: str) -> None:
        with self._admin_lock:
            model = self._models.pop(name, None)
            if model is None:
                failed = [key for key, entry in self._states.items() if key[0] == name and entry.failed]
                if not failed and name not in self.repository.model_names():
                    raise ModelNotFound(name)
                for key in failed:  # unloading a model that failed to load clears its failure
                    self._states[key] = _Entry(ModelState.UNAVAILABLE, UNLOADED)
                return
            self._stop(name, model)
            if self.result_cache is not None:
                self.result_cache.versions_changed(name, list(model.deployments))

    def stop(self) -> None:
        with self._admin_lock:
            for name, model in list(self._models.items()):
                self._stop(name, model)
            self._models.clear()

    def _deploy(self, name: str, version: int, config: ModelConfig) -> Deployment:
        path = self.repository.model_path(name, version)
        cores = available_cores()
        pools = [p for p in self.pools if p.serves(name)]
        if not pools:
            raise InvalidInput(f"no configured pool serves model '{name}'")
        reference: Backend = OnnxBackend(path, OnnxOptions(intra_op_threads=1))
        signature = reference.signature
        max_batch_size = config.max_batch_size
        if max_batch_size is None:
            max_batch_size = DEFAULT_MAX_BATCH_SIZE if signature.batchable else 0
        elif max_batch_size > 0 and not signature.batchable:
            raise InvalidInput(
                f"max_batch_size {max_batch_size} needs a dynamic first dimension on every input and "
                f"output of '{name}'"
            )
        if config.default_tier is not None:
            self.tiers.get(config.default_tier)  # an unknown default tier fails the load, not each request
        declared = None
        if config.inputs or config.outputs:  # config.pbtxt's inputs/outputs: what clients see
            declared = DeclaredView(signature, config, max_batch_size > 0, name)
        stats = self._stats.setdefault((name, version), ModelStats())
        deployment = Deployment(name, version, {}, stats)
        try:
            for pool in pools:
                try:
                    backends = self._pool_backends(pool, path, config, reference, cores, deployment)
                except Exception as exc:  # one pool's backend (a missing extra, a bad endpoint) fails
                    reason = explain(exc)
                    log.error("%s v%d cannot run on pool %s: %s", name, version, pool.name, reason)
                    deployment.variants[pool.name] = {"kind": pool.kind, "accepted": False, "error": reason}
                    continue
                if not backends:
                    continue
                if declared is not None:
                    backends = declared.wrap(backends)
                estimator = ServiceTimeEstimator()
                profile_file = profile_path(self.profiles_dir, name, version, pool.name)
                profile = load_profile(profile_file).batches if profile_file.is_file() else None
                source = warm_up(backends, max_batch_size, config.warmup_shape, estimator, profile)
                deployment.estimate_sources[pool.name] = source
                deployment.runners[pool.name] = ModelRunner(
                    name,
                    version,
                    backends,
                    pool=pool,
                    max_batch_size=max_batch_size,
                    max_queue_delay_s=config.max_queue_delay_ms / 1000,
                    max_queue_size=config.max_queue_size,
                    aging_s=config.aging_ms / 1000,
                    stats=stats,
                    metrics=self.metrics.for_model(name, version, pool.name),
                    estimator=estimator,
                )
        except BaseException:
            deployment.stop()
            raise
        finally:
            reference.close()
        if not deployment.runners:
            raise InvalidInput(f"no pool could run '{name}' version {version}: {deployment.variants}")
        return deployment

    def _pool_backends(
        self,
        pool: PoolSpec,
        path: Path,
        config: ModelConfig,
        reference: Backend,
        cores: int,
        deployment: Deployment,
    ) -> list[Backend]:
        if pool.kind == PoolKind.ONNX_CPU:
            return onnx_backends(path, local_plan(pool, config, cores), config)
        if pool.kind == PoolKind.ONNX_CPU_INT8:
            cache = self.state_dir / "variants" / deployment.name / str(deployment.version)
            try:
                backends, info = int8_backends(
                    path, cache, local_plan(pool, config, cores), config, reference, pool.accuracy_threshold
                )
            except InvalidInput as exc:
                backends, info = [], {"kind": pool.kind, "accepted": False, "error": exc.message}
            deployment.variants[pool.name] = info
            if not backends:
                log.warning(
                    "%s v%d: int8 variant refused on pool %s: %s",
                    deployment.name,
                    deployment.version,
                    pool.name,
                    info,
                )
            return backends
        if pool.gpu:
            from tierserve.backends.torch_cuda import TorchCudaBackend

            return [TorchCudaBackend(path, reference.signature) for _ in range(pool.replicas or 1)]
        from tierserve.backends.remote import RemoteBackend

        remote = RemoteBackend(
            pool.endpoints, deployment.name, reference.signature, concurrency=pool.concurrency,
            timeout_s=pool.timeout_ms / 1000,
        )  # fmt: skip
        return [remote] * pool.concurrency  # one shared pooled client; a replica thread per request in flight

    def _stop(
        self,
        name: str,
        model: _Model,
        replaced: frozenset[int] | set[int] = frozenset(),
        kept: frozenset[int] | set[int] = frozenset(),
    ) -> None:
        """Stop every deployment of ``model`` but those in ``kept`` (they go on serving). Versions in
        ``replaced`` already run anew: their state and metric series belong to the new deployment."""
        for version, deployment in model.deployments.items():
            if version in kept:
                continue
            # No longer found by lookups; requests already holding it are served before it stops.
            if not deployment.drain(DRAIN_TIMEOUT_S):
                log.warning(
                    "%s v%d: requests still in flight after %.0f s; stopping", name, version, DRAIN_TIMEOUT_S
                )
            if version in replaced:
                deployment.stop()
                continue
            self._states[(name, version)] = _Entry(ModelState.UNLOADING)
            deployment.stop()
            self._states[(name, version)] = _Entry(ModelState.UNAVAILABLE, UNLOADED)
            self.metrics.forget_model(
                name, version, [t.name for t in self.tiers.tiers], list(deployment.runners)
            )

    # -- lookups -----------------------------------------------------------------------------

    def deployment(self, name: str, version: str | None = None) -> Deployment:
        model = self._models.get(name)
        if model is None:
            raise ModelNotFound(name, version)
        if version is None or version == "":
            return model.deployments[model.default_version]
        number = parse_version(version)
        if number is None or number not in model.deployments:
            raise ModelNotFound(name, version)
        return model.deployments[number]

    def config(self, name: str) -> ModelConfig:
        model = self._models.get(name)
        if model is None:
            raise ModelNotFound(name)
        return model.config

    def versions(self, name: str) -> list[int]:
        model = self._models.get(name)
        return sorted(model.deployments) if model else []

    def deployments(self) -> list[Deployment]:
        return [d for m in list(self._models.values()) for d in m.deployments.values()]

    def index(self) -> list[dict[str, str]]:
        """Every model in the repository, with the state of each version known to the engine."""
        rows: list[dict[str, str]] = []
        for name in self.repository.model_names():
            known = sorted(v for (n, v) in self._states if n == name)
            if not known:
                rows.append({"name": name, "version": "", "state": ModelState.UNAVAILABLE, "reason": ""})
            for version in known:
                entry = self._states[(name, version)]
                rows.append(
                    {"name": name, "version": str(version), "state": entry.state, "reason": entry.reason}
                )
        for name, reason in self.repository.unservable().items():  # e.g. a Triton repo's TensorRT models
            rows.append({"name": name, "version": "", "state": ModelState.UNAVAILABLE, "reason": reason})
        return sorted(rows, key=lambda row: row["name"])

    def stats(self, name: str | None = None, version: str | None = None) -> list[dict[str, object]]:
        if name is None:
            chosen = self.deployments()
        elif version:
            chosen = [self.deployment(name, version)]
        else:
            model = self._models.get(name)
            if model is None:
                raise ModelNotFound(name)
            chosen = list(model.deployments.values())
        return [
            d.stats.as_triton(d.name, d.version) for d in sorted(chosen, key=lambda d: (d.name, d.version))
        ]

    def profiles(self) -> list[dict[str, object]]:
        """The service-time estimate of every (model version, pool) as it stands, and its seed."""
        return [
            {
                "model": d.name,
                "version": d.version,
                "pool": pool,
                "kind": runner.pool.kind,
                "seeded_from": d.estimate_sources.get(pool, "online only"),
                "batches": {
                    str(rows): {"mean_ms": round(mean * 1000, 4), "dev_ms": round(dev * 1000, 4)}
                    for rows, (mean, dev) in runner.estimator.snapshot().items()
                },
            }
            for d in sorted(self.deployments(), key=lambda d: (d.name, d.version))
            for pool, runner in d.runners.items()
        ]

    def queue_snapshots(self) -> list[tuple[str, int, str, dict[str, int], float | None]]:
        """Per model version and pool: queued requests per tier and the oldest one's age (seconds)."""
        names = {t.priority: t.name for t in self.tiers.tiers}
        rows = []
        for deployment in self.deployments():
            for pool, runner in deployment.runners.items():
                depths, age = runner.queue_snapshot()
                per_tier = {
                    names.get(p, str(p)) if self.honour_tiers else "all": n for p, n in depths.items()
                }
                rows.append((deployment.name, deployment.version, pool, per_tier, age))
        return rows

    # -- serving -----------------------------------------------------------------------------

    def choose_tier(self, model: str, request: InferRequest) -> TierChoice:
        config = self.config(model)
        return self.tiers.for_request(
            request.parameters,
            header=request.tier,
            key_tier=request.key_tier,
            default_priority=config.default_priority_level,
            default_timeout_us=config.default_timeout_us,
            model_default=config.default_tier,
        )

    def clock(self) -> float:
        """The engine's clock (monotonic seconds): what arrivals and deadlines are measured on."""
        return self._clock()

    async def infer(
        self, deployment: Deployment, request: InferRequest, *, cached: bool = True, pinned: bool = True
    ) -> InferResponse:
        """Validate ``request``, route it to a pool by tier and cost, await its outputs (retrying on
        another pool if a batch fails there while the deadline allows). A request that names no
        version (``pinned`` False) goes where the model's rollout sends it; the deployment it runs on
        is not unloaded before it is answered (see ``_stop``). With a result cache installed, it
        answers first (and calls back here with ``cached=False`` on a miss). The deadline counts
        from ``request.arrival`` (on ``clock()``; now when unset)."""
        if request.arrival is None:
            request.arrival = self._clock()
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
            model = self._models.get(deployment.name)
            if choice is not None and model is not None:
                deployment = model.deployments.get(choice.version, deployment)
                if choice.shadow is not None:
                    shadow = model.deployments.get(choice.shadow)
        while not deployment.enter():
            # It drained and closed while this request was on its way (a swap): the version's new
            # deployment, or the model's current default for a request that named no version.
            deployment = self.deployment(deployment.name, str(deployment.version) if pinned else None)
        return deployment, shadow

    def _mirror(self, shadow: Deployment, request: InferRequest) -> None:
        """Run a copy of ``request`` on ``shadow`` and discard its answer (its outcome is observed)."""

        async def run() -> None:
            try:
                if shadow.enter():
                    try:
                        await self._infer(shadow, replace(request, id=None))
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
        outcome = "failed"
        try:
            verdict = self.budgeting.verdict(request.tenant) if self.budgeting.active else _NO_BUDGETS
            prepared = prepare(deployment.signature, deployment.max_batch_size, request, deployment.name)
            # A tenant over a "cheapest" budget is served best effort on the cheapest pool.
            best_effort = verdict.action != "ok"
            t = admission.ticket(
                choice, arrival, prepared.rows, honour_tiers=self.honour_tiers, best_effort=best_effort
            )
            outputs = await self._route(deployment, prepared, t, request.tenant, verdict)
            response = InferResponse(
                model_name=deployment.name,
                model_version=str(deployment.version),
                id=request.id,
                outputs=[
                    OutputTensor(spec.name, spec.datatype, np.asarray(outputs[spec.name]), binary)
                    for spec, binary in prepared.outputs
                ],
            )
            outcome = "met" if self._clock() <= t.deadline else "missed"
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
            self._record(deployment, choice, outcome, int((self._clock() - arrival) * 1e9))

    def admit_early(
        self, deployment: Deployment, header: str | None, key_tier: str | None, arrival: float
    ) -> None:
        """Cheap rejection, before the body is decoded: raise Unavailable when a request whose body
        names no tier, with this ``X-Tier`` header and key, arriving at ``arrival`` could not be
        admitted even with one row.
        Service time grows with rows, so a request that fails here fails after decoding too."""
        config = self.config(deployment.name)
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
            self._pick(deployment, t, set())
        except Unavailable:
            self._record(deployment, choice, "rejected", int((self._clock() - arrival) * 1e9))
            raise

    async def _route(
        self,
        deployment: Deployment,
        prepared: Prepared,
        t: Ticket,
        tenant: str | None = None,
        verdict: Verdict = _NO_BUDGETS,
    ) -> Outputs:
        failed: set[str] = set()
        error: TierserveError | None = None
        while True:
            try:
                runner = self._pick(deployment, t, failed, verdict)
            except Unavailable:
                if error is not None and not t.reject_late:
                    raise error from None  # best effort: the failure itself says more than "no pool left"
                raise
            try:
                outputs = await self._await(runner.submit(prepared.feeds, prepared.batch_key, t), t)
            except (InferenceFailed, Unavailable) as exc:
                if exc.blames_backend:
                    runner.breaker.record_failure(self._clock())
                failed.add(runner.pool.name)
                if len(failed) == len(deployment.runners):
                    raise
                error = exc
                log.info("retrying %s after %s failed: %s", deployment.name, runner.pool.name, exc.message)
                continue
            now = self._clock()
            runner.breaker.record_success(now)
            runner.observe_latency(t.tier.name, now - t.arrival)
            cost = runner.cost_per_item(t.rows) * t.rows
            deployment.stats.record_pool(runner.pool.name, t.rows, cost)
            self.metrics.record_route(deployment.name, runner.pool.name, t.tier.name, tenant, cost)
            if self.budgeting.active:
                busy = runner.estimator.mean(t.rows) if runner.estimator.known else 0.0
                self.budgeting.record(tenant, runner.pool.name, cost, t.rows, busy)
            return outputs

    async def _await(self, future: asyncio.Future[Outputs], t: Ticket) -> Outputs:
        """The outputs; for a best-effort request with its own ``timeout``, DeadlineExceeded (504) once
        that passes, the queued work withdrawn (a batch already running cannot be stopped mid-way)."""
        if not t.client_timeout or t.reject_late:
            return await future
        try:
            return await asyncio.wait_for(future, max(0.0, t.deadline - self._clock()))
        except TimeoutError:
            raise DeadlineExceeded(
                f"tier '{t.tier.name}' request to this model passed its {t.budget_s * 1000:.0f} ms timeout"
            ) from None

    def _pick(
        self, deployment: Deployment, t: Ticket, failed: set[str], verdict: Verdict = _NO_BUDGETS
    ) -> ModelRunner:
        """The pool for this attempt (admission's choice), or Unavailable when none will do."""
        now = self._clock()
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

    def record_cached(self, deployment: Deployment, choice: TierChoice, elapsed_ns: int) -> None:
        """A request answered without running the model (a result-cache hit), counted as served."""
        outcome = "met" if elapsed_ns <= choice.budget_s * 1e9 else "missed"
        self._record(deployment, choice, outcome, elapsed_ns)

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
