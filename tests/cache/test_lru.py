"""The in-process layer: bounded in bytes, least recently used out first, TTL, purge by tag."""

from __future__ import annotations

from tierserve.cache.lru import ENTRY_OVERHEAD_BYTES, ByteLRU

KEY_BYTES = 2  # the test keys below are two bytes long
COST = 100 + KEY_BYTES + ENTRY_OVERHEAD_BYTES  # what one 100-byte value costs


def lru_of(entries: int) -> ByteLRU[str]:
    return ByteLRU(max_bytes=entries * COST)


def put(lru: ByteLRU[str], key: bytes, *, now: float = 0.0, ttl: float = 60.0, tag: str = "m") -> bool:
    return lru.put(key, key.decode(), nbytes=100, tag=tag, expires_at=now + ttl, now=now)


def test_bytes_stay_within_the_bound_and_the_least_recently_used_go_first() -> None:
    lru = lru_of(3)
    for key in (b"k1", b"k2", b"k3"):
        assert put(lru, key)
    assert lru.get(b"k1", 1.0) == "k1"  # k1 is now the most recent; k2 the least
    assert put(lru, b"k4")
    assert lru.get(b"k2", 1.0) is None
    assert [lru.get(k, 1.0) for k in (b"k1", b"k3", b"k4")] == ["k1", "k3", "k4"]
    assert lru.bytes == 3 * COST <= lru.max_bytes
    assert lru.evictions == 1


def test_an_entry_larger_than_the_cache_is_not_stored_and_evicts_nothing() -> None:
    lru = lru_of(2)
    put(lru, b"k1")
    assert not lru.put(b"xx", "big", nbytes=10 * COST, tag="m", expires_at=60.0, now=0.0)
    assert lru.get(b"k1", 0.0) == "k1"
    assert lru.evictions == 0


def test_expired_entries_miss_and_free_their_bytes() -> None:
    lru = lru_of(2)
    put(lru, b"k1", now=0.0, ttl=10.0)
    assert lru.get(b"k1", 9.9) == "k1"
    assert lru.get(b"k1", 10.0) is None
    assert lru.bytes == 0 and len(lru) == 0


def test_replacing_a_key_does_not_count_it_twice() -> None:
    lru = lru_of(2)
    put(lru, b"k1")
    put(lru, b"k1")
    assert lru.bytes == COST and lru.evictions == 0


def test_purge_removes_every_entry_of_a_tag_at_once() -> None:
    lru = lru_of(4)
    put(lru, b"a1", tag="a")
    put(lru, b"a2", tag="a")
    put(lru, b"b1", tag="b")
    assert lru.purge("a") == 2
    assert lru.get(b"a1", 0.0) is None and lru.get(b"a2", 0.0) is None
    assert lru.get(b"b1", 0.0) == "b1"
    assert lru.bytes == COST
