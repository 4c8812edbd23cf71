"""Server settings: command-line flags over ``TIERSERVE_*`` environment variables over defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import yaml

from tierserve.errors import InvalidInput

_ENV_PREFIX = "TIERSERVE_"


@dataclass(frozen=True)
class ServerSettings:
    model_repository: Path = Path("models")
    host: str = "127.0.0.1"
    port: int = 8000
    grpc_port: int = 0  # GRPCInferenceService on this port too (Triton's is 8001); 0: no gRPC
    log_level: str = "info"
    max_body_bytes: int = 64 * 1024 * 1024
    metrics_port: int = 0  # > 0: /metrics also on this port, without authentication (Triton: 8002)
    metrics_host: str = ""  # where the metrics port listens; empty: the same address as --host
    max_decoding_bytes: int = 512 * 1024 * 1024  # request bodies being decoded at once (JSON at 24x)
    header_timeout_s: float = 10.0  # a request's line and headers must arrive within this
    body_timeout_s: float = 30.0  # longest silence while a request body arrives
    max_connections: int = 0  # open HTTP connections; 0: from the file-descriptor limit
    strict_readiness: bool = True  # ready only when no model the server started with failed to load
    exit_on_error: bool = False  # exit at start-up if any model fails to load (Triton's default: true)
    graceful_shutdown_s: int = 30
    config_file: Path | None = None  # YAML: tiers, default_tier
    scheduling: str = "tiers"  # "tiers" (priority + deadlines) or "fifo" (tiers ignored: a baseline)
    state_dir: Path = Path(".state")  # the embedded stores (jobs.db) live here
    autoscale: str = "recommend"  # off; recommend (publish only); local (also resize local CPU pools)
    autoscale_interval_s: float = 5.0
    profiles_dir: Path | None = None  # `tierserve profile` files; default <state_dir>/profiles
    database: str = ""  # jobs: empty = SQLite in state_dir; sqlite:///PATH; postgresql://...
    job_workers: int = 4  # jobs this server runs at once; 0 accepts jobs but runs none
    job_visibility_timeout_s: float = 30.0  # a lease not extended for this long is taken over
    job_max_attempts: int = 3  # default of a job that names none
    job_retry_base_s: float = 1.0  # backoff before the first retry; doubles per retry, with jitter
    job_retry_max_s: float = 300.0
    job_result_ttl_s: float = 86400.0  # finished jobs (and their results) are purged after this
    job_poll_interval_s: float = 0.5  # how often idle workers look for jobs other servers accepted
    max_jobs: int = 100_000  # unfinished jobs stored at most (503 + Retry-After beyond); 0: no limit
    max_jobs_per_tenant: int = 10_000  # unfinished jobs of one tenant (429 + Retry-After); 0: no limit
    max_job_body_bytes: int = 8 * 1024 * 1024  # a job's request as stored (413 beyond)
    max_job_result_bytes: int = 16 * 1024 * 1024  # a larger result fails its job instead of being stored
    # security (tierserve.security): auth is on once keys or JWT settings exist, or off loopback
    insecure: bool = False  # serve without auth on a non-loopback address while no keys exist
    redis: str = ""  # redis://...: rate and concurrency limits shared by servers; empty: in process
    jwt_secret: str = ""  # HS256 (prefer jwt_secret_file or the env var over a flag)
    jwt_secret_file: Path | None = None
    jwt_public_key: Path | None = None  # RS256, PEM
    jwt_jwks: Path | None = None  # RS256, a JWKS file
    jwt_audience: str = ""
    jwt_issuer: str = ""
    key_refresh_s: float = 2.0  # keys made or revoked by the CLI or another server apply within this
    audit_retention_days: float = 90.0  # older audit records are deleted (hourly); 0: kept for ever
    audit_queue_size: int = 10000  # inference audit records waiting; more are dropped (and counted)
    # result cache (tierserve.cache) of the models whose config.yaml opts in
    cache_bytes: int = 256 * 1024 * 1024  # this process's LRU layer, in bytes of cached answers
    cache_redis: str = ""  # redis://... shared layer; empty: the `redis` setting (none: in process only)
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: Any) -> ServerSettings:
        """Defaults, then ``TIERSERVE_<FIELD>`` variables, then the non-None ``overrides``."""
        environ = dict(os.environ) if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = environ.get(_ENV_PREFIX + f.name.upper())
            if raw is not None:
                default = getattr(cls(), f.name)
                kind = Path if default is None else type(default)  # the only optional settings are paths
                values[f.name] = _coerce(f.name, raw, kind)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return replace(cls(), **values)


def _coerce(name: str, raw: str, kind: type[Any]) -> Any:
    try:
        if issubclass(kind, Path):
            return Path(raw)
        if kind is bool:  # bool("false") would be True
            if raw.lower() not in ("1", "true", "yes", "on", "0", "false", "no", "off", ""):
                raise ValueError(raw)
            return raw.lower() in ("1", "true", "yes", "on")
        return kind(raw)
    except ValueError:
        raise ValueError(f"{_ENV_PREFIX}{name.upper()}={raw!r} is not a valid {kind.__name__}") from None


def load_server_config(path: Path | None) -> dict[str, Any]:
    """The server YAML (``--config``): ``tiers``, ``default_tier``, ``pools``, ``tenants`` (rate limits
    per tenant), ``budgets`` and ``quotas``; empty when none is given."""
    if path is None:
        return {}
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"cannot read server config {path}: {exc}") from exc
    if not isinstance(doc, dict):
        raise InvalidInput(f"server config {path} must be a mapping")
    known = {"tiers", "default_tier", "pools", "tenants", "budgets", "quotas"}
    unknown = sorted(set(doc) - known)
    if unknown:
        raise InvalidInput(f"server config {path}: unknown keys {unknown}; known: {', '.join(sorted(known))}")
    return doc


def check_settings(settings: ServerSettings) -> None:
    """Refuse settings that cannot work, before anything starts (InvalidInput: one line to the user)."""
    if not 0 <= settings.port <= 65535:
        raise InvalidInput(f"port {settings.port} is outside 0..65535")
    if settings.max_body_bytes <= 0:  # Triton refuses these too: no request could ever be read
        raise InvalidInput(f"--max-body-bytes must be positive, got {settings.max_body_bytes}")
    positive = {
        "max_decoding_bytes": settings.max_decoding_bytes,
        "header_timeout_s": settings.header_timeout_s,
        "body_timeout_s": settings.body_timeout_s,
    }
    for name, value in positive.items():
        if value <= 0:
            raise InvalidInput(f"{name} must be positive, got {value}")
    if settings.max_connections < 0:
        raise InvalidInput(
            f"max_connections must be >= 0 (0: from the open-file limit), got {settings.max_connections}"
        )
    state_dir = settings.state_dir
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidInput(f"cannot create the state directory {state_dir}: {exc.strerror}") from None
    if not os.access(state_dir, os.W_OK | os.X_OK):
        raise InvalidInput(f"the state directory {state_dir} is not writable")
