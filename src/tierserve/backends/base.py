"""The interface every backend implements."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from tierserve.repository.signature import Signature


class Backend(Protocol):
    """Runs whole batches synchronously; called from one replica thread at a time."""

    kind: str
    signature: Signature

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch: every input in ``feeds``; every output of the model returned by name."""
        ...

    def available(self) -> bool:
        """Whether the backend can take a batch now (a remote one may have no healthy endpoint)."""
        ...

    def close(self) -> None: ...
