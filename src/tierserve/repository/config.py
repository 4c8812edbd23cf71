"""Per-model configuration read from ``<root>/<model>/config.yaml``.

Every key is optional::

    max_batch_size: 32        # 0 turns batching off; omitted: from the graph (dynamic first dim)
    max_queue_delay_ms: 0     # how long a partial batch may wait for company (only when others wait)
    max_queue_size: 1024      # bound of the request queue; over it requests get 503 + Retry-After
    aging_ms: 1000            # lower tiers get a batch at least this often under overload (no starvation)
    instances: 2              # replicas, each with its own ONNX Runtime session and thread; omitted:
                              # one per core this process may use (divided by intra_op_threads)
    intra_op_threads: 1       # omitted: 1 when instances is omitted, else the cores shared among them
    inter_op_threads: 1
    version_policy: latest    # or {latest: 2}, all, {specific: [1, 3]}
    default_tier: bronze      # tier of requests that name none (default: the server's default tier)
    warmup_shape:             # non-batch dims of dynamic inputs for the warm-up sweep (default 1)
      input_ids: [32]
    cache:                    # result cache (tierserve.cache); omitted or false: off; true: defaults
      ttl_s: 3600             # an entry lives this long (in every layer)
      max_bytes: 1048576      # larger answers are served, not cached
      tiers: [local, redis]   # layers: this process's LRU, then Redis shared by every server
      shared: false           # true: one cache for every tenant (the model's answers are not private)
    embedding: {tokenizer: tokenizer.json, max_length: 256}  # text in: /v1/embeddings, collections
    reranker: {tokenizer: tokenizer.json, max_length: 256}   # a cross-encoder (see textmodel.py)
    label_files:              # per output, a file of class labels (one a line) for classification
      probabilities: labels.txt
    default_priority_level: 2 # Triton's priority level of requests that name no tier or priority
    default_timeout_us: 0     # Triton's timeout of requests that name none (0: the tier's target)

A Triton ``config.pbtxt`` beside it is read too (see ``tierserve.repository.pbtxt``); where both set
a key, ``config.yaml`` wins.
    rollout:                  # a canary, A/B or shadow rollout of a version (see tierserve.rollout)
      candidate: 2
      steps: [5, 25, 50, 100]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tierserve.errors import InvalidInput
from tierserve.repository.textmodel import TextModelConfig
from tierserve.rollout.controller import RolloutPlan

DEFAULT_MAX_BATCH_SIZE = 32


@dataclass(frozen=True)
class VersionPolicy:
    """Which versions on disk are served: the newest ``latest``, ``all``, or ``specific`` ones."""

    kind: str = "latest"
    count: int = 1
    versions: tuple[int, ...] = ()

    def select(self, available: list[int]) -> list[int]:
        ordered = sorted(available)
        if self.kind == "all":
            return ordered
        if self.kind == "specific":
            return [v for v in ordered if v in self.versions]
        return ordered[-self.count :]

    @classmethod
    def parse(cls, raw: object) -> VersionPolicy:
        if raw is None or raw == "latest":
            return cls()
        if raw == "all":
            return cls(kind="all")
        if isinstance(raw, Mapping) and len(raw) == 1:
            ((kind, value),) = raw.items()
            if kind == "latest" and isinstance(value, int) and value >= 1:
                return cls(kind="latest", count=value)
            if kind == "specific" and isinstance(value, list) and all(isinstance(v, int) for v in value):
                return cls(kind="specific", versions=tuple(value))
        raise InvalidInput(
            f"version_policy must be latest, all, {{latest: N}} or {{specific: [...]}}: {raw!r}"
        )

    def describe(self) -> dict[str, Any]:
        if self.kind == "all":
            return {"all": {}}
        if self.kind == "specific":
            return {"specific": {"versions": list(self.versions)}}
        return {"latest": {"num_versions": self.count}}


CACHE_LAYERS = ("local", "redis")


@dataclass(frozen=True)
class CacheSettings:
    """A model's result-cache opt-in (``cache:`` in config.yaml, or Triton's ``response_cache``)."""

    ttl_s: float = 3600.0
    max_bytes: int = 1 << 20  # the largest answer (sum of its output tensors) worth keeping
    tiers: tuple[str, ...] = CACHE_LAYERS  # "redis" applies only where the server has a Redis URL
    shared: bool = False  # False: a tenant's cached answers are never served to another tenant

    @classmethod
    def parse(cls, raw: object, *, source: str = "config") -> CacheSettings | None:
        if raw is None or raw is False:
            return None
        if raw is True:
            return cls()
        if not isinstance(raw, Mapping):
            raise InvalidInput(f"{source}: cache must be true, false or a mapping, got {raw!r}")
        known = {"ttl_s", "max_bytes", "tiers", "shared", "enable"}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise InvalidInput(f"{source}: cache: unknown keys {unknown}; known keys are {sorted(known)}")
        if raw.get("enable", True) is False:
            return None
        tiers = raw.get("tiers", list(CACHE_LAYERS))
        if (
            not isinstance(tiers, list)
            or not tiers
            or any(t not in CACHE_LAYERS for t in tiers)
            or len(set(tiers)) != len(tiers)
        ):
            raise InvalidInput(f"{source}: cache.tiers must be a list from {list(CACHE_LAYERS)}: {tiers!r}")
        shared = raw.get("shared", False)
        if not isinstance(shared, bool):
            raise InvalidInput(f"{source}: cache.shared must be true or false, got {shared!r}")
        settings = cls(
            ttl_s=float(_number(raw, "ttl_s", cls.ttl_s, source=f"{source}: cache")),
            max_bytes=_int(raw, "max_bytes", cls.max_bytes, minimum=1, source=f"{source}: cache"),
            tiers=tuple(tiers),
            shared=shared,
        )
        if settings.ttl_s <= 0:
            raise InvalidInput(f"{source}: cache.ttl_s must be > 0")
        return settings


@dataclass(frozen=True)
class DeclaredTensor:
    """An input or output as a Triton configuration declares it: ``dims`` without the batch
    dimension when the model batches; ``reshape`` is the shape the model itself takes or gives."""

    name: str
    datatype: str | None  # the V2 name, e.g. "FP32"; None: the graph's
    dims: tuple[int, ...] | None  # None: the graph's
    reshape: tuple[int, ...] | None = None


@dataclass(frozen=True)
class ModelConfig:
    max_batch_size: int | None = None
    max_queue_delay_ms: float = 0.0
    max_queue_size: int = 1024
    aging_ms: float = 1000.0
    instances: int | None = None  # None: one replica per core (see local_plan)
    intra_op_threads: int | None = None
    inter_op_threads: int = 1
    version_policy: VersionPolicy = field(default_factory=VersionPolicy)
    default_tier: str | None = None
    warmup_shape: dict[str, tuple[int, ...]] = field(default_factory=dict)
    cache: CacheSettings | None = None  # None: this model's answers are never cached
    embedding: TextModelConfig | None = None  # the model embeds text (tokenizer, length, output)
    reranker: TextModelConfig | None = None  # the model scores (query, document) pairs
    label_files: dict[str, str] = field(default_factory=dict)  # output -> file in the model's directory
    labels: dict[str, tuple[str, ...]] = field(default_factory=dict)  # read from label_files on load
    default_priority_level: int | None = None
    default_timeout_us: int | None = None
    # From config.pbtxt (or a load request's config): the signature clients see; empty: the graph's.
    inputs: tuple[DeclaredTensor, ...] = ()
    outputs: tuple[DeclaredTensor, ...] = ()
    rollout: RolloutPlan | None = None  # started once the versions are loaded (see tierserve.releases)

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any], *, source: str = "config") -> ModelConfig:
        known = {
            "max_batch_size",
            "max_queue_delay_ms",
            "max_queue_size",
            "aging_ms",
            "instances",
            "intra_op_threads",
            "inter_op_threads",
            "version_policy",
            "default_tier",
            "warmup_shape",
            "cache",
            "embedding",
            "reranker",
            "label_files",
            "default_priority_level",
            "default_timeout_us",
            "rollout",
        }
        unknown = sorted(set(raw) - known)
        if unknown:
            raise InvalidInput(f"{source}: unknown keys {unknown}; known keys are {sorted(known)}")
        config = cls(
            max_batch_size=_opt_int(raw, "max_batch_size", minimum=0, source=source),
            max_queue_delay_ms=float(_number(raw, "max_queue_delay_ms", 0.0, source=source)),
            max_queue_size=_int(raw, "max_queue_size", 1024, minimum=1, source=source),
            aging_ms=float(_number(raw, "aging_ms", 1000.0, source=source)),
            instances=_opt_int(raw, "instances", minimum=1, source=source),
            intra_op_threads=_opt_int(raw, "intra_op_threads", minimum=1, source=source),
            inter_op_threads=_int(raw, "inter_op_threads", 1, minimum=1, source=source),
            version_policy=VersionPolicy.parse(raw.get("version_policy")),
            default_tier=_opt_str(raw, "default_tier", source=source),
            warmup_shape=_shapes(raw, "warmup_shape", source=source),
            cache=CacheSettings.parse(raw.get("cache"), source=source),
            embedding=TextModelConfig.parse(raw.get("embedding"), section="embedding", source=source),
            reranker=TextModelConfig.parse(raw.get("reranker"), section="reranker", source=source),
            label_files=_names(raw, "label_files", source=source),
            default_priority_level=_opt_int(raw, "default_priority_level", minimum=1, source=source),
            default_timeout_us=_opt_int(raw, "default_timeout_us", minimum=0, source=source),
            rollout=None
            if raw.get("rollout") is None
            else RolloutPlan.parse(raw["rollout"], source=f"{source}: rollout"),
        )
        if config.max_queue_delay_ms < 0:
            raise InvalidInput(f"{source}: max_queue_delay_ms must be >= 0")
        return config

    @classmethod
    def load(cls, path: Path) -> ModelConfig:
        return cls.from_mapping(read_settings(path), source=str(path))


def read_settings(path: Path) -> Mapping[str, Any]:
    """The settings of a ``config.yaml`` (none when there is no such file)."""
    if not path.is_file():
        return {}
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{path}: not valid YAML: {exc}") from exc
    except OSError as exc:
        raise InvalidInput(f"{path}: cannot be read: {exc}") from exc
    if not isinstance(raw, Mapping):
        raise InvalidInput(f"{path}: expected a mapping of settings")
    return raw


def _number(raw: Mapping[str, Any], key: str, default: float, *, source: str) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInput(f"{source}: {key} must be a number, got {value!r}")
    return value


def _int(raw: Mapping[str, Any], key: str, default: int, *, minimum: int, source: str) -> int:
    value = _opt_int(raw, key, minimum=minimum, source=source)
    return default if value is None else value


def _opt_int(raw: Mapping[str, Any], key: str, *, minimum: int, source: str) -> int | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidInput(f"{source}: {key} must be an integer >= {minimum}, got {value!r}")
    return value


def _opt_str(raw: Mapping[str, Any], key: str, *, source: str) -> str | None:
    value = raw.get(key)
    if value is not None and not isinstance(value, str):
        raise InvalidInput(f"{source}: {key} must be a string, got {value!r}")
    return value


def _shapes(raw: Mapping[str, Any], key: str, *, source: str) -> dict[str, tuple[int, ...]]:
    value = raw.get(key) or {}
    ok = isinstance(value, Mapping) and all(
        isinstance(dims, list) and all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dims)
        for dims in value.values()
    )
    if not ok:
        raise InvalidInput(f"{source}: {key} must map input names to lists of positive integers")
    return {str(name): tuple(dims) for name, dims in value.items()}


def _names(raw: Mapping[str, Any], key: str, *, source: str) -> dict[str, str]:
    value = raw.get(key) or {}
    if not isinstance(value, Mapping) or not all(isinstance(v, str) for v in value.values()):
        raise InvalidInput(f"{source}: {key} must map output names to file names")
    return {str(name): file for name, file in value.items()}
