"""The LRU map every in-process cache uses."""

from __future__ import annotations

from incident_responder.lru import LruCache


def test_lru_evicts_least_recently_used_and_counts() -> None:
    seen: list[bool] = []
    cache: LruCache[str, int] = LruCache(2, on_lookup=seen.append)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # a is now the most recent
    cache.put("c", 3)  # evicts b
    assert cache.get("b") is None and cache.get("c") == 3 and len(cache) == 2
    assert seen == [True, False, True]
