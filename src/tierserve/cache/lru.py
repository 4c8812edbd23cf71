"""The in-process layer: least recently used entries go first, bounded in bytes, with a TTL.

Pure apart from a lock (loads and unloads purge from another thread); the clock is passed in.
Rules:

1. ``put`` of an entry larger than the whole bound stores nothing (the caller serves it uncached).
2. Over the bound, the least recently used entries are evicted until the new one fits; each is
   counted in ``evictions``.
3. ``get`` of an expired entry removes it and misses; a hit makes the entry the most recent.
4. ``purge(tag)`` removes every entry stored with that tag (a model version), at once.

Example::

    lru = ByteLRU(max_bytes=1 << 20)
    lru.put(b"k", value, nbytes=400, tag=("m", 1), expires_at=now + 60, now=now)
    lru.get(b"k", now)   # value, or None
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

V = TypeVar("V")

# What an entry costs beyond its value: key, OrderedDict node, the entry object, bookkeeping.
ENTRY_OVERHEAD_BYTES = 200


@dataclass(slots=True)
class _Entry(Generic[V]):
    value: V
    nbytes: int
    tag: Hashable
    expires_at: float


class ByteLRU(Generic[V]):
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.evictions = 0
        self._entries: OrderedDict[bytes, _Entry[V]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: bytes, now: float) -> V | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry.expires_at <= now:
                self._remove(key)
                return None
            self._entries.move_to_end(key)
            return entry.value

    def put(self, key: bytes, value: V, *, nbytes: int, tag: Hashable, expires_at: float, now: float) -> bool:
        """Store ``value``; False when it is larger than the whole cache (nothing stored)."""
        cost = nbytes + len(key) + ENTRY_OVERHEAD_BYTES
        if cost > self.max_bytes or expires_at <= now:
            return False
        with self._lock:
            if key in self._entries:
                self._remove(key)
            while self.bytes + cost > self.max_bytes:
                oldest = next(iter(self._entries))
                self._remove(oldest)
                self.evictions += 1
            self._entries[key] = _Entry(value, cost, tag, expires_at)
            self.bytes += cost
            return True

    def purge(self, tag: Hashable) -> int:
        """Remove every entry stored with ``tag``; how many."""
        with self._lock:
            doomed = [key for key, entry in self._entries.items() if entry.tag == tag]
            for key in doomed:
                self._remove(key)
            return len(doomed)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.bytes = 0

    def _remove(self, key: bytes) -> None:
        entry = self._entries.pop(key)
        self.bytes -= entry.nbytes
