"""The one way to build an Engine from the server's settings and YAML: the app and the CLI commands
(``tierserve profile``) call it, so they load models and pools the same way."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tierserve.budgets.policy import BudgetBook, BudgetConfigError
from tierserve.config import ServerSettings
from tierserve.engine.engine import Engine
from tierserve.engine.pools import parse_pools
from tierserve.errors import InvalidInput
from tierserve.observability.metrics import Metrics
from tierserve.repository.repository import ModelRepository
from tierserve.scheduler.tiers import TierTable


def build_engine(
    settings: ServerSettings,
    server_config: Mapping[str, Any],
    metrics: Metrics,
    *,
    profiles_dir: Path | None = None,
) -> Engine:
    """An engine over ``settings.model_repository`` with the YAML's tiers, pools and budgets.
    ``profiles_dir`` overrides ``settings.profiles_dir`` (``tierserve profile`` measures afresh)."""
    try:
        budgets = BudgetBook.from_config(server_config)
    except BudgetConfigError as exc:
        raise InvalidInput(f"server config: {exc}") from None
    return Engine(
        ModelRepository(settings.model_repository),
        metrics,
        TierTable.from_config(server_config),
        pools=parse_pools(server_config.get("pools")),
        honour_tiers=settings.scheduling == "tiers",
        state_dir=settings.state_dir,
        profiles_dir=profiles_dir or settings.profiles_dir,
        budgets=budgets,
    )
