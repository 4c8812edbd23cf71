"""Triton's system shared-memory extension: named POSIX shared-memory regions for tensors.

A client creates a region (``shm_open``, e.g. with ``tritonclient.utils.shared_memory``), registers
it as ``(name, key, offset, byte_size)``, and then names it in an input's or output's parameters
(``shared_memory_region``, ``shared_memory_byte_size``, ``shared_memory_offset``): the server reads
that input's bytes from the region, and writes that output's bytes into it instead of the body.

Rules:

1. ``key`` is a POSIX shared-memory name (``/name``, no other slash); the region is the file of that
   name under ``/dev/shm``, opened without following links; ``offset + byte_size`` must lie inside it.
2. A name is registered once (400 on a second registration); unregistering an unknown name, or all
   when none are registered, is not an error (as in Triton).
3. At most ``MAX_REGIONS`` regions; each is mapped once, at registration, and unmapped when
   unregistered or when the server stops.
4. Reads copy the bytes out (a client may rewrite its region while the request runs); a read or
   write must lie inside the registered ``byte_size``.
5. Each region keeps its file open, and every read or write first checks that the file still holds
   the registered span: touching a mapping past the end of a file its owner has shrunk would kill
   the whole server (SIGBUS); instead that request gets a 400.
"""

from __future__ import annotations

import mmap
import os
import re
import stat
import threading
from dataclasses import dataclass
from pathlib import Path

from tierserve.errors import InvalidInput, TierserveError

MAX_REGIONS = 1024
SHM_DIR = Path("/dev/shm")
_KEY = re.compile(r"^/?[A-Za-z0-9_.\-]{1,250}$")


class RegionNotFound(TierserveError):
    status_code = 404


@dataclass
class _Region:
    name: str
    key: str
    offset: int
    byte_size: int
    mapping: mmap.mmap
    fd: int

    def close(self) -> None:
        self.mapping.close()
        os.close(self.fd)

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "key": self.key, "offset": self.offset, "byte_size": self.byte_size}


class SystemSharedMemory:
    def __init__(self, *, max_regions: int = MAX_REGIONS, directory: Path = SHM_DIR) -> None:
        self._max_regions = max_regions
        self._directory = directory
        self._regions: dict[str, _Region] = {}
        self._lock = threading.Lock()  # registration and copies run on worker threads too

    def register(self, name: str, key: str, offset: int, byte_size: int) -> None:
        if not name:
            raise InvalidInput("a shared memory region needs a name")
        if not _KEY.match(key) or key.lstrip("/") in (".", ".."):
            raise InvalidInput(f"'{key}' is not a POSIX shared memory key ('/name', no other slash)")
        for what, value in (("offset", offset), ("byte_size", byte_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InvalidInput(f"shared memory {what} must be a non-negative integer")
        if byte_size == 0:
            raise InvalidInput("shared memory byte_size must be positive")
        with self._lock:
            if name in self._regions:
                raise InvalidInput(f"shared memory region '{name}' already in manager")
            if len(self._regions) >= self._max_regions:
                raise InvalidInput(f"at most {self._max_regions} shared memory regions may be registered")
            fd, mapping = self._map(key, offset, byte_size)
            self._regions[name] = _Region(name, key, offset, byte_size, mapping, fd)

    def _map(self, key: str, offset: int, byte_size: int) -> tuple[int, mmap.mmap]:
        path = self._directory / key.lstrip("/")
        try:
            fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
        except OSError as exc:
            raise InvalidInput(f"Unable to open shared memory region: '{key}' ({exc.strerror})") from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise InvalidInput(f"Invalid shared memory region: '{key}'")
            if offset + byte_size > info.st_size:
                raise InvalidInput(
                    f"shared memory region '{key}' holds {info.st_size} bytes; offset {offset} + "
                    f"byte_size {byte_size} runs past its end"
                )
            return fd, mmap.mmap(fd, offset + byte_size)
        except BaseException:
            os.close(fd)
            raise

    def unregister(self, name: str | None = None) -> None:
        with self._lock:
            names = list(self._regions) if name is None else [name]
            for each in names:
                region = self._regions.pop(each, None)
                if region is not None:
                    region.close()

    def status(self, name: str | None = None) -> list[dict[str, object]]:
        with self._lock:
            if name is None:
                return [region.describe() for region in self._regions.values()]
            if name not in self._regions:
                raise RegionNotFound(f"Unable to find system shared memory region: '{name}'")
            return [self._regions[name].describe()]

    def read(self, name: str, offset: int, size: int) -> bytes:
        with self._lock:
            region = self._get(name)
            start = self._span(region, offset, size)
            return region.mapping[start : start + size]

    def write(self, name: str, offset: int, data: bytes) -> None:
        with self._lock:
            region = self._get(name)
            start = self._span(region, offset, len(data))
            region.mapping[start : start + len(data)] = data

    def close(self) -> None:
        self.unregister()

    def _get(self, name: str) -> _Region:
        region = self._regions.get(name)
        if region is None:  # named by a request: a bad request (400), not an unknown resource
            raise InvalidInput(f"Unable to find shared memory region: '{name}'")
        return region

    @staticmethod
    def _span(region: _Region, offset: int, size: int) -> int:
        if offset + size > region.byte_size:
            raise InvalidInput(
                f"{size} bytes at offset {offset} run past the {region.byte_size} bytes of shared "
                f"memory region '{region.name}'"
            )
        start = region.offset + offset
        if os.fstat(region.fd).st_size < start + size:
            raise InvalidInput(
                f"shared memory region '{region.name}' ('{region.key}') was shrunk by its owner; "
                "register it again"
            )
        return start
