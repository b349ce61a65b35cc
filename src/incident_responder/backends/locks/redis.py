"""Locks shared by replicas through Redis: per tenant+service, and per tenant for ticket writes.

The lock serializes the decide-and-write step for one tenant+service across every
process (so a storm hitting N replicas still opens one ticket). It is taken after an
in-process lock for the same key, so a process sends Redis one waiter per key; its
holder renews it while it works, and it expires by itself (``timeout``) if the holder dies.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import anyio.to_thread
import redis
import structlog
from redis.exceptions import LockError, RedisError

from incident_responder.backends.locks.memory import MemoryLocks
from incident_responder.backends.redis_client import key_name
from incident_responder.errors import BackendUnavailable

log = structlog.get_logger(__name__)


class _RedisLockMaker:
    """Named Redis locks that expire ``timeout`` s after they were taken, waited for at most
    ``blocking_timeout`` s, taken and given back from any thread (blocking client)."""

    PREFIX = "ir:lock:"  # of the lock names; each kind of lock has its own

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str | None = None,
        timeout: float = 30.0,
        blocking_timeout: float = 30.0,
    ) -> None:
        self._client = client
        self._prefix = self.PREFIX if prefix is None else prefix
        self._timeout = timeout
        self._blocking_timeout = blocking_timeout

    def _lock(self, key: tuple[str, ...], *, poll: float) -> Any:
        return self._client.lock(
            key_name(self._prefix, key),
            timeout=self._timeout,
            sleep=poll,
            blocking_timeout=self._blocking_timeout,
            thread_local=False,  # acquired and released from different worker threads
        )

    def _release(self, lock: Any) -> None:
        """Give ``lock`` back; one that expired meanwhile, or a Redis that fails, is only
        logged (a lock expires by itself)."""
        try:
            lock.release()
        except LockError:
            log.warning("redis.lock_expired_before_release", timeout=self._timeout)
        except RedisError as exc:
            log.warning("redis.lock_release_failed", error=type(exc).__name__)


class RedisLocks(_RedisLockMaker):
    """The :class:`~incident_responder.ports.LockProvider` of replicas: a Redis lock per key, taken
    after an in-process lock for the same key and renewed while it is held."""

    def __init__(self, client: redis.Redis, **options: Any) -> None:
        """``options``: those of :class:`_RedisLockMaker` (prefix, timeout, blocking_timeout)."""
        super().__init__(client, **options)
        self._local = MemoryLocks()

    async def _renew(self, lock: Any) -> None:
        """Reset the lock's expiry every third of ``timeout`` while it is held: a group of new
        tickets waiting on an LLM may hold it longer than ``timeout``. A dead holder stops
        renewing, so the lock still expires by itself."""
        while True:
            await asyncio.sleep(self._timeout / 3)
            try:
                await anyio.to_thread.run_sync(lock.reacquire)
            except LockError:  # lost already (expired while Redis was unreachable)
                log.warning("redis.lock_lost", timeout=self._timeout)
                return
            except RedisError as exc:  # try again next round; it may still expire
                log.warning("redis.lock_renew_failed", error=type(exc).__name__)

    @asynccontextmanager
    async def hold(self, *key: str) -> AsyncIterator[None]:
        async with self._local.hold(*key):
            # The blocking client in a worker thread: only one thread per key waits
            # here, since same-key callers of this process queue on the local lock.
            lock = self._lock(key, poll=0.005)
            try:
                acquired = await anyio.to_thread.run_sync(lock.acquire)
            except RedisError as exc:
                raise BackendUnavailable(f"redis lock failed: {type(exc).__name__}") from exc
            if not acquired:
                raise BackendUnavailable("timed out waiting for the shared lock")
            renewer = asyncio.create_task(self._renew(lock))
            try:
                yield
            finally:
                renewer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await renewer
                await anyio.to_thread.run_sync(self._release, lock)


class RedisWriteLock(_RedisLockMaker):
    """Replicas take turns writing a tenant's tickets (blocking client, from a worker thread).

    Without it, replicas in a storm collide on the same hot tickets: every round of
    compare-and-swap loses to another replica's write about half the time, and a starved
    replica can lose every round. A turn costs two Redis calls per group commit. If Redis
    fails or the turn does not come within ``blocking_timeout``, the write goes on
    unserialized (compare-and-swap keeps it correct), with a warning.
    """

    PREFIX = "ir:writes:"

    @contextlib.contextmanager
    def hold(self, tenant: str) -> Iterator[None]:
        lock = self._lock((tenant,), poll=0.002)
        try:
            acquired = bool(lock.acquire())
        except RedisError as exc:
            log.warning("redis.write_lock_failed", error=type(exc).__name__)
            acquired = False
        else:
            if not acquired:
                log.warning("redis.write_lock_timed_out", timeout=self._blocking_timeout)
        try:
            yield
        finally:
            if acquired:
                self._release(lock)
