"""Server settings: command-line flags over ``TIERSERVE_*`` environment variables over defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

_ENV_PREFIX = "TIERSERVE_"


@dataclass(frozen=True)
class ServerSettings:
    model_repository: Path = Path("models")
    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "info"
    max_body_bytes: int = 64 * 1024 * 1024
    graceful_shutdown_s: int = 30
    config_file: Path | None = None  # YAML: tiers, default_tier
    scheduling: str = "tiers"  # "tiers" (priority + deadlines) or "fifo" (tiers ignored: a baseline)

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
        return kind(raw)
    except ValueError:
        raise ValueError(f"{_ENV_PREFIX}{name.upper()}={raw!r} is not a valid {kind.__name__}") from None
