"""The result cache in the request path: look up, single flight, store; invalidate on load/unload.

Per request of a model whose config opts in (``cache:``), in order:

1. Not cacheable (a sequence request, ``"cache": false``)? Run it, counted as bypassed.
2. Key (``key.py``): tenant scope, model, version, weights fingerprint, generation, inputs, outputs,
   output-changing parameters; then the precision class: requests whose tier accepts approximate
   answers read exact and approximate entries and store approximate ones (an int8 pool may have
   served them); other requests read and store exact entries only. A model version with no
   approximate pool stores every answer as exact.
3. The local LRU, then Redis (a hit there is promoted to the local layer). A hit skips the queue
   and the model, and is counted as served (per tier: met or missed), in Triton's statistics
   (``cache_hit``) and in Prometheus.
4. A miss joins an identical inference already running (single flight), or starts one. A
   successful answer no larger than ``max_bytes`` is stored in every layer the model names;
   errors are never stored.

Invalidation: every load, reload or unload of a version (``versions_changed``, called by the
engine) purges its local entries, refingerprints its weights and takes a new generation from
Redis (INCR, published to every server, which purge theirs). A request bound to a deployment the
cache has not fingerprinted (loaded before the cache, or swapped meanwhile) is served uncached.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry

from tierserve.cache.answer import Answer, CorruptEntry
from tierserve.cache.flight import Flights
from tierserve.cache.key import (
    APPROX,
    EXACT,
    MAX_KEYED_INPUT_BYTES,
    KeyPrefix,
    cacheable,
    input_bytes,
    key_for,
    request_key,
    sizes,
)
from tierserve.cache.lru import ByteLRU
from tierserve.cache.metrics import CacheMetrics, ModelCacheMetrics
from tierserve.cache.redis_tier import RedisTier, TierDown, answer_key
from tierserve.engine.request import InferRequest, InferResponse
from tierserve.errors import ModelNotFound
from tierserve.repository.config import CacheSettings
from tierserve.scheduler.tiers import TierChoice

if TYPE_CHECKING:
    from tierserve.engine.deployment import Deployment
    from tierserve.engine.engine import Engine

log = logging.getLogger(__name__)

MAX_SCOPES_PER_VERSION = 4096  # key prefixes remembered per version (one per tenant seen)


@dataclass
class _Version:
    """What the keys of one loaded model version are built from."""

    deployment: Deployment
    fingerprint: bytes
    generation: int
    approximate: bool  # some pool serves it with an approximate (int8) variant
    prefixes: dict[str, KeyPrefix] = field(default_factory=dict)

    def prefix(self, scope: str) -> KeyPrefix:
        found = self.prefixes.get(scope)
        if found is None:
            if len(self.prefixes) >= MAX_SCOPES_PER_VERSION:
                self.prefixes.clear()
            found = self.prefixes[scope] = KeyPrefix.of(
                scope=scope,
                model=self.deployment.name,
                version=self.deployment.version,
                fingerprint=self.fingerprint,
                generation=self.generation,
            )
        return found


def fingerprint(version_dir: Path) -> bytes:
    """BLAKE2b of every file of a model version (names and contents): answers of different weights
    never share a key, whatever their version number says."""
    h = hashlib.blake2b(digest_size=16)
    for path in sorted(p for p in version_dir.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(version_dir)).encode() + b"\x00")
        with path.open("rb") as f:
            h.update(hashlib.file_digest(f, "blake2b").digest())
    return h.digest()


class ResultCacheService:
    """Implements ``tierserve.engine.hooks.ResultCache``; see the module docstring."""

    def __init__(
        self,
        engine: Engine,
        registry: CollectorRegistry,
        *,
        local_bytes: int,
        redis_url: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._engine = engine
        self._clock = clock
        self._local: ByteLRU[Answer] = ByteLRU(local_bytes)
        self._evictions_seen = 0
        self._metrics = CacheMetrics(registry, lambda: float(self._local.bytes))
        self._versions: dict[tuple[str, int], _Version] = {}
        self._flights: Flights[tuple[InferResponse, Answer]] = Flights()
        self._redis = RedisTier(redis_url, self._generation_seen) if redis_url else None
        if self._redis is not None:
            self._redis.known = lambda: list(self._versions)
        self._warned: set[str] = set()

    @classmethod
    def install(
        cls, engine: Engine, registry: CollectorRegistry, local_bytes: int, redis_url: str
    ) -> ResultCacheService:
        cache = cls(engine, registry, local_bytes=local_bytes, redis_url=redis_url)
        engine.result_cache = cache
        return cache

    async def open(self) -> None:
        if self._redis is not None:
            await self._redis.open()

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.close()

    # -- the request path ------------------------------------------------------------------------

    async def infer(self, deployment: Deployment, request: InferRequest) -> InferResponse:
        engine = self._engine
        try:
            settings = engine.config(deployment.name).cache
        except ModelNotFound:
            settings = None
        if settings is None:
            return await engine.infer(deployment, request, cached=False)
        metrics = self._metrics.model(deployment.name)
        version = self._versions.get((deployment.name, deployment.version))
        if version is None or version.deployment is not deployment:
            metrics.bypassed["swapping"].inc()  # bound to a deployment being replaced (or not yet known)
            return await engine.infer(deployment, request, cached=False)
        if not cacheable(request):
            metrics.bypassed["not_cacheable"].inc()
            return await engine.infer(deployment, request, cached=False)
        if input_bytes(request) > MAX_KEYED_INPUT_BYTES:
            metrics.bypassed["too_large"].inc()
            return await engine.infer(deployment, request, cached=False)
        started = time.perf_counter_ns()
        choice = engine.choose_tier(deployment.name, request)
        digest = request_key(version.prefix("*" if settings.shared else request.tenant), request)
        reads: tuple[bytes, ...]
        if version.approximate and choice.tier.approximate:
            reads, store_as = (key_for(digest, EXACT), key_for(digest, APPROX)), APPROX
        else:
            reads, store_as = (key_for(digest, EXACT),), EXACT
        local = "local" in settings.tiers

        if local:
            now = self._clock()
            for key in reads:
                answer = self._local.get(key, now)
                if answer is not None:
                    return self._hit(deployment, request, choice, answer, "local", started, metrics)
            metrics.misses["local"].inc()
        redis = self._redis if "redis" in settings.tiers else None
        if redis is not None:
            try:
                found = await redis.get([answer_key(deployment.name, deployment.version, k) for k in reads])
            except TierDown:
                metrics.bypassed["redis_down"].inc()
            else:
                answer = self._decoded(found[1]) if found is not None else None
                if found is not None and answer is not None:
                    if local and self._versions.get((deployment.name, deployment.version)) is version:
                        self._store_local(reads[found[0]], answer, version, settings)  # promotion
                    return self._hit(deployment, request, choice, answer, "redis", started, metrics)
                metrics.misses["redis"].inc()
        elif "redis" in settings.tiers:
            self._warn_once(deployment.name, "names the redis tier, but the server has no Redis URL")
        deployment.stats.record_cache(False, time.perf_counter_ns() - started)
        metrics.missed.inc()

        store_key = key_for(digest, store_as)
        flight = self._flights.get(store_key)
        if flight is not None and flight.admits(choice.tier.priority):
            led = await flight.follow()
            if led is None:  # the leader failed or went away: its failure is its own
                return await engine.infer(deployment, request, cached=False)
            metrics.coalesced.inc()
            decided = engine.record_cached(deployment, choice, time.perf_counter_ns() - started)
            coalesced = led[1].response(request, deployment.name, deployment.version)
            coalesced.decision = request.decision = decided
            return coalesced
        response, answer = await self._flights.lead(
            store_key, choice.tier.priority, self._compute(deployment, request, settings.max_bytes)
        )
        self._store(store_key, answer, deployment, version, settings, metrics)  # errors never get here
        return response

    async def _compute(
        self, deployment: Deployment, request: InferRequest, max_bytes: int
    ) -> tuple[InferResponse, Answer]:
        """The engine's response, and the answer taken out of it before anyone (the leader's API
        layer applying Triton's classification, say) can change it: copied when it may be stored."""
        response = await self._engine.infer(deployment, request, cached=False)
        storable = sizes(t.array for t in response.outputs) <= max_bytes
        return response, Answer.of(response, copy=storable)

    def _hit(
        self,
        deployment: Deployment,
        request: InferRequest,
        choice: TierChoice,
        answer: Answer,
        layer: str,
        started: int,
        metrics: ModelCacheMetrics,
    ) -> InferResponse:
        response = answer.response(request, deployment.name, deployment.version)
        elapsed = time.perf_counter_ns() - started
        deployment.stats.record_cache(True, elapsed)
        response.decision = request.decision = self._engine.record_cached(deployment, choice, elapsed)
        metrics.hits[layer].inc()
        metrics.answered.inc()
        metrics.hit_seconds[layer].observe(elapsed / 1e9)
        return response

    @staticmethod
    def _decoded(raw: bytes) -> Answer | None:
        try:
            return Answer.decode(raw)
        except CorruptEntry as exc:
            log.warning("result cache: ignoring an unreadable Redis entry: %s", exc)
            return None

    def _store(
        self,
        key: bytes,
        answer: Answer,
        deployment: Deployment,
        version: _Version,
        settings: CacheSettings,
        metrics: ModelCacheMetrics,
    ) -> None:
        if self._versions.get((deployment.name, deployment.version)) is not version:
            return  # reloaded meanwhile: the answer belongs to keys nobody builds any more
        if answer.nbytes > settings.max_bytes:
            metrics.bypassed["too_large"].inc()
            return
        started = time.perf_counter_ns()
        if "local" in settings.tiers and self._store_local(key, answer, version, settings):
            metrics.stored_bytes["local"].inc(answer.nbytes)
        if (
            "redis" in settings.tiers
            and self._redis is not None
            and self._redis.put(
                answer_key(deployment.name, deployment.version, key), answer.encode(), settings.ttl_s
            )
        ):
            metrics.stored_bytes["redis"].inc(answer.nbytes)
        deployment.stats.record_cache(False, time.perf_counter_ns() - started, count=0)

    def _store_local(self, key: bytes, answer: Answer, version: _Version, settings: CacheSettings) -> bool:
        now = self._clock()
        tag = (version.deployment.name, version.deployment.version)
        stored = self._local.put(
            key, answer, nbytes=answer.nbytes, tag=tag, expires_at=now + settings.ttl_s, now=now
        )
        evicted = self._local.evictions - self._evictions_seen
        if evicted:
            self._evictions_seen += evicted
            self._metrics.evictions.labels("local").inc(evicted)
        return stored

    def _warn_once(self, model: str, what: str) -> None:
        if model not in self._warned:
            self._warned.add(model)
            log.warning("result cache of model '%s': %s; caching in this process only", model, what)

    # -- invalidation ----------------------------------------------------------------------------

    def versions_changed(self, name: str, versions: Iterable[int]) -> None:
        for number in versions:
            tag = (name, number)
            previous = self._versions.pop(tag, None)
            self._local.purge(tag)
            try:
                deployment = self._engine.deployment(name, str(number))
                settings = self._engine.config(name).cache
            except ModelNotFound:
                deployment, settings = None, None
            if deployment is None or settings is None:
                if previous is not None:  # unloaded, or no longer cached: its keys die everywhere
                    self._new_generation(name, number, previous.generation)
                    with contextlib.suppress(KeyError):
                        self._metrics.generation.remove(name, str(number))
                continue
            path = self._engine.repository.model_path(name, number).parent
            starting = not self._engine.started and previous is None
            generation = self._new_generation(name, number, previous.generation if previous else 0, starting)
            self._versions[tag] = _Version(
                deployment,
                fingerprint(path),
                generation,
                approximate=any(r.pool.approximate for r in deployment.runners.values()),
            )
            self._metrics.generation.labels(name, str(number)).set(generation)
            log.info("result cache: %s version %d at generation %d", name, number, generation)

    def _new_generation(self, name: str, number: int, previous: int, starting: bool = False) -> int:
        """The shared generation after this change (at start-up: the current one, since a server
        joining changes no answer); without Redis, the next local one."""
        if self._redis is None:
            return previous + 1
        try:
            return self._redis.read(name, number) if starting else self._redis.bump(name, number)
        except TierDown:
            log.warning("result cache: %s version %d: new generation kept locally (Redis down)", name, number)
            return previous + 1

    def _generation_seen(self, name: str, number: int, generation: int) -> None:
        """Another server (or our resync) reports ``generation`` for a version."""
        version = self._versions.get((name, number))
        if version is None or version.generation == generation:
            return
        self._versions[(name, number)] = _Version(
            version.deployment, version.fingerprint, generation, version.approximate
        )
        self._local.purge((name, number))
        self._metrics.generation.labels(name, str(number)).set(generation)
