"""One contract for every VectorCache: in this process (LRU) and shared by replicas (Redis)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import numpy as np
import pytest
import redis

from incident_responder.backends.caches.memory import MemoryVectorCache
from incident_responder.backends.caches.redis import RedisVectorCache
from incident_responder.ports import VectorCache

REDIS_URL = "redis://127.0.0.1:6379/0"
DIM = 4


@pytest.fixture(params=["memory", "redis"])
def make_cache(request: pytest.FixtureRequest) -> Iterator[Callable[[list[bool]], VectorCache]]:
    """A factory of caches that report their lookups (hit or miss) to the list given."""
    if request.param == "memory":
        yield lambda seen: MemoryVectorCache(100, on_lookup=seen.append)
        return
    client = redis.Redis.from_url(REDIS_URL)
    prefix = f"ir:test-vectors:{uuid.uuid4().hex}:"
    yield lambda seen: RedisVectorCache(client, dim=DIM, ttl_seconds=60, prefix=prefix, on_lookup=seen.append)
    client.close()


def test_a_vector_put_is_got_back_and_lookups_are_counted(
    make_cache: Callable[[list[bool]], VectorCache],
) -> None:
    seen: list[bool] = []
    cache = make_cache(seen)
    vector = np.array([0.1, 0.2, 0.3, 0.4], dtype=np.float32)
    assert cache.get("disk full") is None
    cache.put("disk full", vector)
    got = cache.get("disk full")
    assert got is not None and np.array_equal(got, vector) and got.dtype == np.float32
    assert cache.get("disk empty") is None
    assert seen == [False, True, False]


def test_blocking_says_whether_calls_wait_on_the_network(
    make_cache: Callable[[list[bool]], VectorCache],
) -> None:
    cache = make_cache([])
    assert cache.blocking is isinstance(cache, RedisVectorCache)


def test_the_memory_cache_forgets_the_least_recently_used() -> None:
    cache = MemoryVectorCache(2)
    for text in ("a", "b"):
        cache.put(text, np.zeros(DIM, dtype=np.float32))
    assert cache.get("a") is not None  # "b" is now the least recently used
    cache.put("c", np.zeros(DIM, dtype=np.float32))
    assert cache.get("b") is None and cache.get("a") is not None and cache.get("c") is not None
