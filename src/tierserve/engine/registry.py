"""The model registry: what is loaded, in which versions, on which pools; load, reload and unload.

A load reads the model's configuration and signature from the repository (the graph's inputs and
outputs are read from the ONNX file, and ``config.pbtxt``'s declarations are applied over them; no
inference session is built just to learn them), then builds, for every configured pool that serves
the model, that pool's backends through the registry of backend kinds (``engine.kinds``), warms them
up and starts a runner. One pool that cannot run the model leaves the others serving; a version that
fails to reload keeps serving as it was (as Triton does); a model that fails is recorded, with its
reason, for the repository index and strict readiness.

Load and unload are rare and slow, and run one at a time (``_admin_lock``); lookups read the tables
without it (they are replaced, never edited in place, while requests read them).
"""

from __future__ import annotations

import enum
import logging
import os
import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path

from tierserve.backends.base import Backend
from tierserve.backends.declared import DeclaredView
from tierserve.engine.deployment import Deployment
from tierserve.engine.kinds import Target, Variant, build_backends
from tierserve.engine.pools import PoolSpec
from tierserve.engine.runner import ModelRunner
from tierserve.engine.warmup import warm_up
from tierserve.errors import InvalidInput, ModelNotFound, TierserveError, explain
from tierserve.observability.metrics import Metrics
from tierserve.observability.stats import ModelStats
from tierserve.profiler.profile import load_profile, profile_path
from tierserve.repository.config import DEFAULT_MAX_BATCH_SIZE, ModelConfig
from tierserve.repository.repository import ModelRepository, parse_version
from tierserve.scheduler.service_time import ServiceTimeEstimator
from tierserve.scheduler.tiers import TierTable

log = logging.getLogger(__name__)

# How long an unloaded or replaced deployment waits for the requests inside it before it stops.
DRAIN_TIMEOUT_S = 30.0
UNLOADED = "unloaded"


class ModelState(enum.StrEnum):
    LOADING = "LOADING"
    READY = "READY"
    UNLOADING = "UNLOADING"
    UNAVAILABLE = "UNAVAILABLE"


@dataclass(frozen=True)
class VersionState:
    state: ModelState
    reason: str = ""
    # A failure that holds strict readiness down: models the server was started with (and their later
    # failed reloads). A failed explicit load of a model that was not serving is answered to its caller
    # (400) and shown in the index, but does not drain a server that serves every other model.
    blocks_readiness: bool = False

    @property
    def failed(self) -> bool:
        return self.state is ModelState.UNAVAILABLE and self.reason != UNLOADED


@dataclass
class LoadedModel:
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


VersionsChanged = Callable[[str, Collection[int]], None]


class ModelRegistry:
    def __init__(
        self,
        repository: ModelRepository,
        metrics: Metrics,
        tiers: TierTable,
        pools: list[PoolSpec],
        *,
        state_dir: Path,
        profiles_dir: Path,
        versions_changed: VersionsChanged | None = None,
    ) -> None:
        self.repository = repository
        self.metrics = metrics
        self.tiers = tiers
        self.pools = pools
        self.state_dir = state_dir
        self.profiles_dir = profiles_dir
        # Told which versions of a model were loaded, reloaded or unloaded (the result cache's hook).
        self.versions_changed = versions_changed
        self._models: dict[str, LoadedModel] = {}
        self._states: dict[tuple[str, int], VersionState] = {}
        self._stats: dict[tuple[str, int], ModelStats] = {}
        self._admin_lock = threading.Lock()
        self.started = False

    # -- lookups -----------------------------------------------------------------------------

    def deployment(self, name: str, version: str | None = None) -> Deployment:
        """The deployment of ``version`` (a URL segment; None or "": the model's default version)."""
        model = self._models.get(name)
        if model is None:
            raise ModelNotFound(name, version)
        if version is None or version == "":
            return model.deployments[model.default_version]
        number = parse_version(version)
        if number is None or number not in model.deployments:
            raise ModelNotFound(name, version)
        return model.deployments[number]

    def loaded(self, name: str) -> LoadedModel | None:
        return self._models.get(name)

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

    def states(self) -> dict[tuple[str, int], VersionState]:
        """The state of every (model, version) the registry has been asked about, as it stands."""
        return dict(self._states)

    # -- readiness ---------------------------------------------------------------------------

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

    # -- load, reload, unload ------------------------------------------------------------------

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
            model = LoadedModel(config)
            kept: set[int] = set()
            failures: list[str] = []
            for version in wanted:
                serving = previous.deployments.get(version) if previous is not None else None
                if serving is None:
                    self._states[(name, version)] = VersionState(ModelState.LOADING)
                try:
                    model.deployments[version] = self._deploy(name, version, config)
                    self._states[(name, version)] = VersionState(ModelState.READY)
                except Exception as exc:
                    reason = explain(exc)
                    if not isinstance(exc, TierserveError):
                        log.exception("%s version %d failed to load", name, version)
                    if serving is not None:
                        model.deployments[version] = serving
                        kept.add(version)
                        reason = f"reload failed, serving the version loaded before: {reason}"
                        self._states[(name, version)] = VersionState(ModelState.READY, reason)
                    else:
                        self._states[(name, version)] = VersionState(ModelState.UNAVAILABLE, reason, blocks)
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
            if self.versions_changed is not None:
                self.versions_changed(name, {*wanted, *(previous.deployments if previous else ())})
            if failures:
                raise InvalidInput(f"failed to load '{name}': " + "; ".join(failures))
            log.info(
                "loaded %s versions %s on pools %s",
                name,
                sorted(model.deployments),
                [p.name for p in self.pools if p.serves(name)],
            )

    def _fail_model(self, name: str, previous: LoadedModel | None, reason: str, blocks: bool) -> None:
        """Record a model-wide failure (its config) on each of its versions; what serves stays."""
        try:
            versions = self.repository.versions(name)
        except Exception:
            versions = []
        for version in versions:
            if previous is not None and version in previous.deployments:
                self._states[(name, version)] = VersionState(
                    ModelState.READY, f"reload failed, serving as loaded before: {reason}"
                )
            else:
                self._states[(name, version)] = VersionState(ModelState.UNAVAILABLE, reason, blocks)
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
                    self._states[key] = VersionState(ModelState.UNAVAILABLE, UNLOADED)
                return
            self._stop(name, model)
            if self.versions_changed is not None:
                self.versions_changed(name, list(model.deployments))

    def stop(self) -> None:
        with self._admin_lock:
            for name, model in list(self._models.items()):
                self._stop(name, model)
            self._models.clear()

    def _target(self, name: str, version: int, config: ModelConfig) -> tuple[Target, int]:
        """What the backend factories build for, and the version's max batch size (0: no batching).
        The signature is the graph's, read from the file; ``config.pbtxt``'s inputs and outputs,
        when declared, are what clients see (checked against the graph here, once)."""
        path = self.repository.model_path(name, version)
        signature = self.repository.signature(name, version)
        max_batch_size = config.max_batch_size
        if max_batch_size is None:
            max_batch_size = DEFAULT_MAX_BATCH_SIZE if signature.batchable else 0
        elif max_batch_size > 0 and not signature.batchable:
            raise InvalidInput(
                f"max_batch_size {max_batch_size} needs a dynamic first dimension on every input and "
                f"output of '{name}'"
            )
        declared = None
        if config.inputs or config.outputs:
            declared = DeclaredView(signature, config, max_batch_size > 0, name)
        variants_dir = self.state_dir / "variants" / name / str(version)
        target = Target(name, version, path, config, signature, available_cores(), variants_dir, declared)
        return target, max_batch_size

    def _deploy(self, name: str, version: int, config: ModelConfig) -> Deployment:
        pools = [p for p in self.pools if p.serves(name)]
        if not pools:
            raise InvalidInput(f"no configured pool serves model '{name}'")
        target, max_batch_size = self._target(name, version, config)
        if config.default_tier is not None:
            self.tiers.get(config.default_tier)  # an unknown default tier fails the load, not each request
        stats = self._stats.setdefault((name, version), ModelStats())
        deployment = Deployment(name, version, {}, stats)
        try:
            for pool in pools:
                try:
                    built = build_backends(pool, target)
                except Exception as exc:  # one pool's backend (a missing extra, a bad endpoint) fails
                    reason = explain(exc)
                    log.error("%s v%d cannot run on pool %s: %s", name, version, pool.name, reason)
                    deployment.variants[pool.name] = Variant(pool.kind, error=reason)
                    continue
                if built.variant is not None:
                    deployment.variants[pool.name] = built.variant
                if not built.backends:
                    log.warning(
                        "%s v%d: variant refused on pool %s: %s", name, version, pool.name, built.variant
                    )
                    continue
                runner, source = self._runner(pool, target, built.backends, max_batch_size, stats)
                deployment.runners[pool.name] = runner
                deployment.estimate_sources[pool.name] = source
        except BaseException:
            deployment.stop()
            raise
        if not deployment.runners:
            described = {pool: variant.describe() for pool, variant in deployment.variants.items()}
            raise InvalidInput(f"no pool could run '{name}' version {version}: {described}")
        return deployment

    def _runner(
        self, pool: PoolSpec, target: Target, backends: list[Backend], max_batch_size: int, stats: ModelStats
    ) -> tuple[ModelRunner, str]:
        """The pool's runner, its service-time estimate seeded (from a profile file when one was
        measured for this version and pool, else from a warm-up sweep); and where the seed came from."""
        name, version, config = target.name, target.version, target.config
        estimator = ServiceTimeEstimator()
        profile_file = profile_path(self.profiles_dir, name, version, pool.name)
        profile = load_profile(profile_file).batches if profile_file.is_file() else None
        source = warm_up(backends, max_batch_size, config.warmup_shape, estimator, profile)
        runner = ModelRunner(
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
        return runner, source

    def _stop(
        self,
        name: str,
        model: LoadedModel,
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
            self._states[(name, version)] = VersionState(ModelState.UNLOADING)
            deployment.stop()
            self._states[(name, version)] = VersionState(ModelState.UNAVAILABLE, UNLOADED)
            self.metrics.forget_model(
                name, version, [t.name for t in self.tiers.tiers], list(deployment.runners)
            )
