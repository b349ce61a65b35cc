"""One contract for every LockProvider: in-process (asyncio) and shared by replicas (Redis)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator

import pytest
import redis

from incident_responder.backends.locks.memory import MemoryLocks
from incident_responder.backends.locks.redis import RedisLocks
from incident_responder.ports import LockProvider

REDIS_URL = "redis://127.0.0.1:6379/0"
Factory = Callable[[], LockProvider]


@pytest.fixture(params=["memory", "redis"])
def make_locks(request: pytest.FixtureRequest) -> Iterator[Factory]:
    """A factory: each call is another holder of the SAME locks (another replica for Redis;
    for the in-process kind, the same provider, as every part of one process shares it)."""
    if request.param == "memory":
        shared = MemoryLocks()
        yield lambda: shared
        return
    prefix = f"ir:test-locks:{uuid.uuid4().hex}:"
    clients: list[redis.Redis] = []

    def make() -> LockProvider:
        clients.append(redis.Redis.from_url(REDIS_URL))
        return RedisLocks(clients[-1], prefix=prefix, timeout=5, blocking_timeout=5)

    yield make
    for client in clients:
        client.close()


async def test_holders_of_one_key_take_turns(make_locks: Factory) -> None:
    holders = [make_locks(), make_locks()]
    inside = overlaps = done = 0

    async def critical(locks: LockProvider) -> None:
        nonlocal inside, overlaps, done
        async with locks.hold("acme", "payments"):
            inside += 1
            overlaps += inside > 1
            await asyncio.sleep(0.003)
            inside -= 1
            done += 1

    await asyncio.gather(*(critical(holders[i % 2]) for i in range(16)))
    assert (done, overlaps) == (16, 0)


async def test_different_keys_do_not_wait_for_each_other(make_locks: Factory) -> None:
    a, b = make_locks(), make_locks()
    async with a.hold("acme", "payments"):
        await asyncio.wait_for(_enter(b, "acme", "checkout"), timeout=2)
        await asyncio.wait_for(_enter(b, "globex", "payments"), timeout=2)  # tenants are keys too


async def test_a_failing_holder_gives_the_lock_back(make_locks: Factory) -> None:
    locks = make_locks()
    with pytest.raises(RuntimeError):
        async with locks.hold("acme", "payments"):
            raise RuntimeError("boom")
    await asyncio.wait_for(_enter(make_locks(), "acme", "payments"), timeout=2)


async def _enter(locks: LockProvider, *key: str) -> None:
    async with locks.hold(*key):
        pass
