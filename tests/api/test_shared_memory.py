"""System shared-memory regions over real POSIX shared memory (``multiprocessing.shared_memory``)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from multiprocessing import shared_memory
from pathlib import Path

import pytest

from tierserve.api.shared_memory import RegionNotFound, SystemSharedMemory
from tierserve.errors import InvalidInput

pytestmark = pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="no POSIX shared memory here")


@pytest.fixture
def segment() -> Iterator[shared_memory.SharedMemory]:
    name = f"tierserve-test-{os.getpid()}"
    created = shared_memory.SharedMemory(name=name, create=True, size=64)
    try:
        yield created
    finally:
        created.close()
        created.unlink()


def test_register_read_write_status_unregister(segment: shared_memory.SharedMemory) -> None:
    regions = SystemSharedMemory()
    segment.buf[:8] = b"abcdefgh"
    regions.register("in", f"/{segment.name}", 4, 32)
    assert regions.status() == [{"name": "in", "key": f"/{segment.name}", "offset": 4, "byte_size": 32}]
    assert regions.read("in", 0, 4) == b"efgh"  # offsets count from the region's own offset
    regions.write("in", 8, b"XY")
    assert bytes(segment.buf[12:14]) == b"XY"
    with pytest.raises(InvalidInput, match="run past the 32 bytes"):
        regions.read("in", 30, 4)
    with pytest.raises(InvalidInput, match="already in manager"):
        regions.register("in", f"/{segment.name}", 0, 8)
    regions.unregister("in")
    regions.unregister("in")  # unknown: nothing to do, as in Triton
    assert regions.status() == []
    with pytest.raises(RegionNotFound):
        regions.status("in")
    with pytest.raises(InvalidInput, match="Unable to find shared memory region"):
        regions.read("in", 0, 1)


@pytest.mark.parametrize(
    "key, offset, size, message",
    [
        ("/../etc/passwd", 0, 8, "not a POSIX shared memory key"),
        ("/a/b", 0, 8, "not a POSIX shared memory key"),
        ("/tierserve-no-such-region", 0, 8, "Unable to open shared memory region"),
        (None, 60, 8, "runs past its end"),
        (None, 0, 0, "byte_size must be positive"),
        (None, -1, 8, "offset must be a non-negative integer"),
    ],
)
def test_bad_registrations_are_400(
    segment: shared_memory.SharedMemory, key: str | None, offset: int, size: int, message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        SystemSharedMemory().register("r", key or f"/{segment.name}", offset, size)


def test_the_number_of_regions_is_bounded(segment: shared_memory.SharedMemory) -> None:
    regions = SystemSharedMemory(max_regions=2)
    regions.register("a", f"/{segment.name}", 0, 8)
    regions.register("b", f"/{segment.name}", 8, 8)
    with pytest.raises(InvalidInput, match="at most 2"):
        regions.register("c", f"/{segment.name}", 16, 8)
    regions.close()
    assert regions.status() == []


def test_a_region_its_owner_shrank_is_a_400_not_a_crash(segment: shared_memory.SharedMemory) -> None:
    regions = SystemSharedMemory()
    regions.register("r", f"/{segment.name}", 0, 64)
    fd = os.open(f"/dev/shm/{segment.name}", os.O_RDWR)
    try:
        os.ftruncate(fd, 16)  # what touching the mapping past here would do: SIGBUS
        assert regions.read("r", 0, 16) == bytes(16)
        with pytest.raises(InvalidInput, match="was shrunk by its owner"):
            regions.read("r", 8, 16)
        with pytest.raises(InvalidInput, match="was shrunk by its owner"):
            regions.write("r", 32, b"x")
    finally:
        os.ftruncate(fd, 64)
        os.close(fd)
        regions.close()
