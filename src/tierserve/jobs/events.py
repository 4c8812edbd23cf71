"""In-process wake-ups for watchers of a job (the events stream).

Changes made by this server wake its watchers at once; changes made by another server sharing the
database are seen when the watcher polls the store, so a wake-up is a hint, never the only signal.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager


class JobEvents:
    def __init__(self) -> None:
        self._watchers: dict[str, set[asyncio.Event]] = {}
        self.closing = False  # the server is shutting down: streams end instead of waiting

    def publish(self, job_id: str) -> None:
        for event in self._watchers.get(job_id, ()):
            event.set()

    def close(self) -> None:
        """Wake every watcher for the last time; each sees ``closing`` and ends its stream."""
        self.closing = True
        for watchers in list(self._watchers.values()):
            for event in watchers:
                event.set()

    @contextmanager
    def subscribe(self, job_id: str) -> Iterator[asyncio.Event]:
        """An event set whenever this server changes ``job_id``; the watcher clears it."""
        event = asyncio.Event()
        self._watchers.setdefault(job_id, set()).add(event)
        try:
            yield event
        finally:
            watchers = self._watchers.get(job_id)
            if watchers is not None:
                watchers.discard(event)
                if not watchers:
                    del self._watchers[job_id]
