"""Shared state through the real Redis on 127.0.0.1:6379 (started by .ci/run if down)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
import redis

from incident_responder.api.app import create_app
from incident_responder.backends.idempotency.redis import RedisIdempotencyStore
from incident_responder.backends.locks.redis import RedisLocks
from incident_responder.backends.redis_client import key_name
from incident_responder.container import Services
from incident_responder.errors import BackendUnavailable
from incident_responder.models import IdempotencyRecord, utcnow
from incident_responder.settings import Settings
from tests.conftest import ACME, MakeClient
from tests.helpers import db_log

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def db_url() -> str:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.RedisError as exc:  # CI starts it; a missing Redis is a failure, not a skip
        pytest.fail(f"Redis is not running on 127.0.0.1:6379: {exc}")
    finally:
        client.close()
    return REDIS_URL


async def test_lock_on_unreachable_redis_is_backend_unavailable() -> None:
    client = redis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    with pytest.raises(BackendUnavailable):
        async with RedisLocks(client).hold("t", "s"):
            pass
    client.close()


def test_idempotency_records_expire(db_url: str) -> None:
    client = redis.Redis.from_url(db_url)
    repo = RedisIdempotencyStore(client, ttl_seconds=1, prefix=f"ir:t:{uuid.uuid4().hex}:")
    rec = IdempotencyRecord(request_hash="h", status_code=201, body={"a": 1}, created_at=utcnow())
    repo.put("acme", "k", rec)
    assert repo.get("acme", "k") == rec
    assert repo.get("globex", "k") is None
    import time

    time.sleep(1.2)
    assert repo.get("acme", "k") is None
    client.close()


@pytest.fixture
async def shared_pair(
    db_url: str, make_settings: Callable[..., Settings], make_services: Callable[..., Services]
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    """Two apps (two 'replicas') sharing Redis; each has its own data dir."""
    with redis.Redis.from_url(db_url) as client:
        client.flushdb()
    apps = []
    for name in ("one", "two"):
        settings = make_settings(
            data_dir=make_settings().data_dir / name,
            redis={"url": db_url},
            rate_limit={"per_key": "5/minute", "per_tenant": ""},
        )
        apps.append(create_app(settings, services=make_services(settings)))
    async with (
        httpx.AsyncClient(transport=httpx.ASGITransport(app=apps[0]), base_url="http://a") as a,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=apps[1]), base_url="http://b") as b,
    ):
        yield a, b


async def test_rate_limit_budget_is_shared_between_replicas(
    shared_pair: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    a, b = shared_pair
    codes = []
    for i in range(7):
        http = a if i % 2 else b
        codes.append((await http.get("/v1/runbooks", headers=ACME)).status_code)
    assert codes[:5] == [200] * 5 and codes[5:] == [429, 429]
    limited = await a.get("/v1/runbooks", headers=ACME)
    assert limited.json()["error"]["code"] == "rate_limited"
    assert int(limited.headers["Retry-After"]) >= 1


async def test_idempotency_key_is_shared_between_replicas(
    shared_pair: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    a, b = shared_pair
    body = {"service": "api", "log": db_log(1)}
    first = await a.post("/v1/incidents", json=body, headers={**ACME, "Idempotency-Key": "shared-1"})
    again = await b.post("/v1/incidents", json=body, headers={**ACME, "Idempotency-Key": "shared-1"})
    assert first.status_code == again.status_code == 201 and first.json() == again.json()
    other = await b.post(
        "/v1/incidents", json={**body, "log": "x"}, headers={**ACME, "Idempotency-Key": "shared-1"}
    )
    assert other.status_code == 409


async def test_redis_down_queues_instead_of_losing(
    make_client: MakeClient,
) -> None:
    async with make_client(
        redis={"url": "redis://127.0.0.1:1/0", "timeout": 0.2}, rate_limit={"storage_uri": "memory://"}
    ) as http:
        r = await http.post("/v1/incidents", json={"service": "api", "log": db_log(1)}, headers=ACME)
        assert r.status_code == 202 and r.json()["status"] == "queued"


def test_embedding_cache_is_shared_and_never_fails(db_url: str) -> None:
    import numpy as np

    from incident_responder.backends.caches.redis import RedisVectorCache

    seen: list[bool] = []
    with redis.Redis.from_url(db_url) as client:
        one = RedisVectorCache(
            client, dim=4, ttl_seconds=60, prefix=f"ir:t:{uuid.uuid4().hex}:", on_lookup=seen.append
        )
        two = RedisVectorCache(client, dim=4, ttl_seconds=60, prefix=one._prefix)
        vec = np.array([0.5, 0.5, 0.5, 0.5], dtype=np.float32)
        assert one.get("text") is None
        one.put("text", vec)
        assert np.array_equal(two.get("text"), vec)  # another replica sees it
        assert seen == [False]
    with redis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2) as down:
        broken = RedisVectorCache(down, dim=4, ttl_seconds=60)
        broken.put("text", vec)  # a cache outage is a miss, never an error
        assert broken.get("text") is None


async def test_a_lock_held_longer_than_its_timeout_is_renewed(db_url: str) -> None:
    clients = [redis.Redis.from_url(db_url) for _ in range(2)]
    prefix = f"ir:test:{uuid.uuid4().hex}:"
    holder, rival = (RedisLocks(c, prefix=prefix, timeout=0.6, blocking_timeout=0.1) for c in clients)
    try:
        async with holder.hold("acme", "payments"):
            await asyncio.sleep(1.5)  # 2.5 timeouts: without renewal the lock would have expired
            with pytest.raises(BackendUnavailable, match="timed out"):
                async with rival.hold("acme", "payments"):
                    pass
        async with rival.hold("acme", "payments"):  # released on exit: free at once
            pass
    finally:
        for c in clients:
            c.close()


async def test_a_dead_holders_lock_still_expires(db_url: str) -> None:

    client = redis.Redis.from_url(db_url)
    prefix = f"ir:test:{uuid.uuid4().hex}:"
    try:
        # A holder that died: its key is there with its expiry, and nobody renews it.
        client.set(key_name(prefix, ("acme", "payments")), "dead-holder", px=400)
        locks = RedisLocks(client, prefix=prefix, timeout=5, blocking_timeout=2)
        started = asyncio.get_running_loop().time()
        async with locks.hold("acme", "payments"):
            waited = asyncio.get_running_loop().time() - started
        assert 0.2 < waited < 2.0
    finally:
        client.close()


async def test_a_lock_lost_while_held_is_reported_not_raised(db_url: str) -> None:
    from structlog.testing import capture_logs

    client = redis.Redis.from_url(db_url)
    prefix = f"ir:test:{uuid.uuid4().hex}:"
    locks = RedisLocks(client, prefix=prefix, timeout=0.6)
    try:
        with capture_logs() as events:
            async with locks.hold("acme", "payments"):
                client.delete(key_name(prefix, ("acme", "payments")))  # e.g. evicted, or Redis restarted
                await asyncio.sleep(0.4)  # the renewer finds it gone
        assert {"redis.lock_lost", "redis.lock_expired_before_release"} <= {e["event"] for e in events}
    finally:
        client.close()
