"""What the engine calls out to without knowing who implements it (a higher layer installs it).

The result cache (``tierserve.cache``) sits above the engine but must see every inference, whatever
the protocol that brought it, and every load or unload of a model version. The engine calls this
interface; the application installs the implementation on ``Engine.result_cache``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from tierserve.engine.deployment import Deployment
    from tierserve.engine.request import InferRequest, InferResponse


class ResultCache(Protocol):
    async def infer(self, deployment: Deployment, request: InferRequest) -> InferResponse:
        """Answer ``request`` from the cache, or through ``Engine.infer(..., cached=False)``."""

    def versions_changed(self, name: str, versions: Iterable[int]) -> None:
        """These versions of ``name`` were just loaded, reloaded or unloaded (called on the loading
        thread, before the load or unload returns to its caller)."""
