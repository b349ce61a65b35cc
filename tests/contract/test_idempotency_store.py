"""One contract for every IdempotencyStore: records over the object store (local disk) and Redis."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import redis

from incident_responder.backends.idempotency.objects import ObjectIdempotencyStore
from incident_responder.backends.idempotency.redis import RedisIdempotencyStore
from incident_responder.backends.objects.local import LocalObjectStore
from incident_responder.models import IdempotencyRecord, utcnow
from incident_responder.ports import IdempotencyStore

REDIS_URL = "redis://127.0.0.1:6379/0"
TTL = 3600.0


class Clock:
    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture(params=["objects", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[IdempotencyStore]:
    if request.param == "objects":
        yield ObjectIdempotencyStore(LocalObjectStore(tmp_path / "objects"), TTL, max_records=3)
        return
    client = redis.Redis.from_url(REDIS_URL)
    yield RedisIdempotencyStore(client, TTL, max_records=3, prefix=f"ir:test-idem:{uuid.uuid4().hex}:")
    client.close()


def _record(n: int, at: datetime | None = None) -> IdempotencyRecord:
    return IdempotencyRecord(request_hash=f"h{n}", status_code=201, body={"n": n}, created_at=at or utcnow())


def test_records_are_kept_per_tenant(store: IdempotencyStore) -> None:
    first = _record(1)
    store.put("acme", "k", first)
    assert store.get("acme", "k") == first
    assert store.get("globex", "k") is None
    store.put("acme", "k", _record(2))  # overwritten
    again = store.get("acme", "k")
    assert again is not None and again.body == {"n": 2}


def test_a_tenant_keeps_at_most_the_cap_newest_first(store: IdempotencyStore) -> None:
    start = utcnow()
    for n in range(5):
        store.put("acme", f"k{n}", _record(n, start + timedelta(milliseconds=10 * n)))
        store.put("globex", f"k{n}", _record(n, start + timedelta(milliseconds=10 * n)))
    store.sweep("acme")
    assert [store.get("acme", f"k{n}") is not None for n in range(5)] == [False, False, True, True, True]
    store.sweep("globex")
    assert [store.get("globex", f"k{n}") is not None for n in range(5)] == [False, False, True, True, True]


def test_expired_records_are_swept_from_the_object_store(tmp_path: Path) -> None:
    objects = LocalObjectStore(tmp_path / "objects")
    clock = Clock()
    store = ObjectIdempotencyStore(objects, TTL, max_records=100, clock=clock)
    old = clock.now - timedelta(seconds=2 * TTL)
    store.put("acme", "old", _record(1, old))
    store.put("acme", "again", _record(2, old))
    store.put("acme", "again", _record(3, clock.now))  # written anew since: its old log entry goes alone
    store.put("acme", "new", _record(4, clock.now))
    assert store.get("acme", "old") is None  # expired records are never answered
    assert store.sweep("acme") == 2
    assert objects.get("acme/idempotency/" + ObjectIdempotencyStore._digest("old") + ".json") is None
    again = store.get("acme", "again")
    assert again is not None and again.body == {"n": 3}
    assert store.get("acme", "new") is not None
    assert len(objects.list_keys("acme/idempotency-log/")) == 2
    assert store.sweep("acme") == 0  # nothing left to do: the sweep stops at the first live entry
